"""README.md is a front page: short, and it begins with the two commands a newcomer runs
on a fresh machine, as the Makefile spells them. The reference lives in docs/."""

from __future__ import annotations

import re

from tests.docs import REPO, Markdown

README = REPO / "README.md"
MAX_LINES = 200
FIRST_COMMANDS = ("make run", "make test")


def test_the_readme_is_a_front_page() -> None:
    assert len(README.read_text().splitlines()) <= MAX_LINES


def test_it_begins_with_the_two_commands() -> None:
    """The title, then a code block holding `make run` and `make test`, nothing between."""
    readme = Markdown.read(README)
    before = README.read_text().split("```", 1)[0].splitlines()
    assert [line for line in before if line.strip()] == ["# squashd"]
    commands = [line.split("#")[0].strip() for line in readme.code_blocks()[0]]
    assert [command for command in commands if command] == list(FIRST_COMMANDS)


def test_the_makefile_has_both_targets() -> None:
    makefile = (REPO / "Makefile").read_text()
    for command in FIRST_COMMANDS:
        target = command.removeprefix("make ")
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no `{target}:` rule"
