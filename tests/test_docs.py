"""The README stays a first screen, and the documentation's links lead somewhere: every relative link in README.md,
docs/*.md and benchmarks/README.md names an existing file (and an anchor a heading of the page it points to)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
README_MAX_LINES = 250


def without_code_blocks(text):
    return re.sub(r"^ *```.*?^ *```[^\n]*$", "", text, flags=re.S | re.M)


def links(page):
    """The link targets of a markdown page, outside code (a `[...](...)` inside backticks is not a link)."""
    prose = re.sub(r"`[^`]*`", "", without_code_blocks(page.read_text()))
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation other than '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", without_code_blocks(page.read_text()), flags=re.M)}


def test_slug_follows_github():
    assert slug("When to raise `--ddp_timeout`") == "when-to-raise---ddp_timeout"
    assert slug("run_qa.py: extractive question answering") == "run_qapy-extractive-question-answering"
    assert slug("Preemption (SIGTERM, SIGINT)") == "preemption-sigterm-sigint"


def test_links_outside_code_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See [a](a.md#x) and ![b](img/b.png).\n`[c](c.md)`\n```\n[d](d.md)\n```\n[e\nf](https://e.org)\n")
    assert links(page) == ["a.md#x", "img/b.png", "https://e.org"]


def test_readme_is_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_readme_test_command_is_the_one_ci_runs():
    assert "```bash\npython -m pytest tests -q\n```" in README.read_text()
    assert re.search(r"^python -m pytest tests -q( |$)", (ROOT / ".ci" / "run").read_text(), flags=re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_headings(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README) if not re.match(r"[a-z]+:", t)}
    assert set(PAGES[1:]) <= linked
