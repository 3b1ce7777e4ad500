"""The operators' read-only view (the status page, /metrics, /readyz): the board's
counters, the exports queued or building, recent failures, the most requested tags and
whether each is built, the queues' depths, whether each part answers. One look does
more than read: the status page's look at the exports in progress sends again a build
whose worker died, as any look at an export does.
"""

from typing import Any

from tasks.board import READY, Job
from tasks.enqueue import resend_if_dead
from tasks.parts import Parts


class Overview:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.settings = parts.settings

    @property
    def board_errors(self) -> tuple[type[Exception], ...]:
        """What reading the board raises when Redis is unreachable."""
        return self.parts.board.errors

    def store_description(self) -> str:
        return self.parts.store.describe()

    def counters(self) -> dict[str, float]:
        return self.parts.board.metrics()

    def active_jobs(self, *, resend_dead: bool = False) -> list[Job]:
        """Exports queued or building, oldest first; with `resend_dead`, a look that
        sends dead builds again (the status page's)."""
        jobs = self.parts.board.active()
        if resend_dead:
            looked = [resend_if_dead(self.parts, job) for job in jobs]
            jobs = [job for job in looked if job is not None and job.active]
        return sorted(jobs, key=lambda job: job.created)

    def recent_failures(self) -> list[dict[str, Any]]:
        """Builds that failed, newest first: key, image, error, time."""
        return self.parts.board.failures()

    def popular_tags(self, now: float) -> list[tuple[str, float, str | None]]:
        """The most requested tags: (tag, decayed count, artifact key of its default)."""
        board = self.parts.board
        top = board.popular(self.settings.presquash_top, now)
        keys = board.tag_keys([tag for tag, _ in top])
        return [(tag, count, keys.get(tag)) for tag, count in top]

    def artifact_state(self, key: str | None) -> str:
        """ready, building, queued, failed, or absent (not built, or never resolved)."""
        if key is None:
            return "absent"
        job = self.parts.on_board(self.parts.board.job, key)
        if job is not None and job.state != READY:
            return job.state
        return READY if self.parts.find_artifact(key) is not None else "absent"

    def queue_depths(self) -> dict[str, int]:
        """Builds waiting, by queue."""
        return self.parts.dispatcher.depths()

    def readiness(self) -> dict[str, str]:
        """What each part this process needs answers: "ok" or what went wrong."""
        parts = self.parts
        checks = {
            "board": parts.board.ping,
            "store": parts.store.ping,
            "broker": parts.dispatcher.ping,
        }
        report = {}
        for name, check in checks.items():
            try:
                check()
                report[name] = "ok"
            except Exception as exc:
                report[name] = f"{type(exc).__name__}: {exc}"
        return report
