"""Every relative link in README.md and docs/*.md points at a file that exists, and every
`#anchor` at a heading of its page (GitHub's slugs): a page renamed or a heading reworded
breaks the link here, not for a reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs import Markdown, github_slug, markdown_files

_EXTERNAL = ("http://", "https://", "mailto:")


def broken_links(page: Markdown) -> list[str]:
    """The links of `page` that lead nowhere, each as `target: why`."""
    broken = []
    for target in page.links():
        if target.startswith(_EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        file = page.path.parent / path if path else page.path
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in Markdown.read(file).anchors():
            broken.append(f"{target}: no such heading")
    return broken


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: path.name)
def test_every_link_resolves(path: Path) -> None:
    assert broken_links(Markdown.read(path)) == []


def test_the_check_can_fail(tmp_path: Path) -> None:
    """A missing file and missing headings are found; a repeated heading's second anchor,
    a directory and an external link are not broken; a link in a code block is no link."""
    (tmp_path / "other.md").write_text("# Other page\n\n## The `/v2/` front, again\n")
    (tmp_path / "folder").mkdir()
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Same\n\n## Same\n\n"
        "[a](other.md#the-v2-front-again) [b](#same-1) [c](https://example.com/x.md)\n"
        "[d](gone.md) [e](other.md#nowhere) [f](#same-2) [g](folder/)\n\n"
        "```sh\n# not a heading [h](nowhere.md)\n```\n"
    )
    assert broken_links(Markdown.read(page)) == [
        "gone.md: no such file",
        "other.md#nowhere: no such heading",
        "#same-2: no such heading",
    ]


def test_slugs_follow_github() -> None:
    assert github_slug("The `/c1/squash/...` route") == "the-c1squash-route"
    assert github_slug("Who may read what") == "who-may-read-what"
    assert github_slug("`POST /v1/exports`") == "post-v1exports"
    assert github_slug('Hard links to lower layers wait ("pending")') == (
        "hard-links-to-lower-layers-wait-pending"
    )
