"""The project's markdown (README.md and docs/*.md) read the way GitHub renders it: what
is prose and what is a fenced code block, the tables' rows, the headings and the anchors
GitHub makes of them, and the links. The doc tests check the docs against the tree with
these; nothing here knows what the docs should say."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# `[text](target)` or `[text](target "title")`; an image's `![alt](src)` is one too.
_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A table cell ends at a `|` that is not escaped (`\|` is a pipe inside a cell).
_CELL_BORDER = re.compile(r"(?<!\\)\|")


def markdown_files() -> list[Path]:
    """README.md and every page of docs/, the files whose links and tables are checked."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Markdown:
    path: Path
    text: str

    @classmethod
    def read(cls, path: Path) -> Markdown:
        return cls(path, path.read_text())

    @property
    def name(self) -> str:
        return str(self.path.relative_to(REPO))

    def _lines(self) -> Iterator[tuple[str, str]]:
        """Every line, with where it stands: `prose`, or a fenced code block's `open`
        fence, a line `inside` it, its `close` fence."""
        fence = ""
        for line in self.text.splitlines():
            marker = _FENCE.match(line)
            if not fence and marker:
                fence = marker.group(1)
                yield "open", line
            elif fence and marker and marker.group(1).startswith(fence):
                fence = ""
                yield "close", line
            else:
                yield ("inside" if fence else "prose"), line

    def prose(self) -> list[str]:
        """The lines outside fenced code blocks: a `# comment` in a shell block is not a
        heading, nor a `|` in one a table."""
        return [line for where, line in self._lines() if where == "prose"]

    def code_blocks(self) -> list[list[str]]:
        """The fenced code blocks in order, each as its lines without the fences."""
        blocks: list[list[str]] = []
        for where, line in self._lines():
            if where == "open":
                blocks.append([])
            elif where == "inside":
                blocks[-1].append(line)
        return blocks

    def table_rows(self) -> list[list[str]]:
        """Every body row of every table, as its cells stripped (the header rows too; the
        `|---|` separators not)."""
        rows = []
        for line in self.prose():
            stripped = line.strip()
            if not stripped.startswith("|"):
                continue
            cells = [cell.strip() for cell in _CELL_BORDER.split(stripped.strip("|"))]
            if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                continue
            rows.append(cells)
        return rows

    def headings(self) -> list[str]:
        return [m.group(2) for line in self.prose() if (m := _HEADING.match(line))]

    def anchors(self) -> set[str]:
        """The ids GitHub gives the headings: a repeated slug gets `-1`, `-2`, ..."""
        seen: dict[str, int] = {}
        anchors = set()
        for heading in self.headings():
            slug = github_slug(heading)
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
        return anchors

    def links(self) -> list[str]:
        """Every link target in the prose (not in code blocks, not in code spans)."""
        targets = []
        for line in self.prose():
            targets += _LINK.findall(_CODE_SPAN.sub("", line))
        return targets


def github_slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: the rendered text (code spans' contents,
    links' text) lower-cased, everything but letters, digits, `-`, `_` and spaces
    dropped, each space a `-`."""
    text = _CODE_SPAN.sub(lambda m: m.group(2), heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    kept = "".join(c for c in text.lower() if c.isalnum() or c in "-_ ")
    return kept.replace(" ", "-")
