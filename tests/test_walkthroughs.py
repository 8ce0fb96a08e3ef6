"""The walkthroughs in docs/walkthroughs run as written: every Python block of a page, in
order, in one namespace (their asserts check the notes' numbers)."""
import pathlib
import re

import pytest

PAGES = sorted((pathlib.Path(__file__).resolve().parents[1] / "docs" / "walkthroughs")
               .glob("*.md"))
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_there_is_a_walkthrough_per_note_linked_from_the_readme():
    assert [p.name[:3] for p in PAGES] == ["000", "001", "002", "003", "004"]
    readme = README.read_text()
    for page in PAGES:
        assert f"(docs/walkthroughs/{page.name})" in readme, page.name


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_walkthrough_runs(page):
    text = page.read_text()
    blocks = list(re.finditer(r"```python\n(.*?)```", text, re.S))
    assert blocks
    namespace = {}
    for block in blocks:
        # blank lines in front, so that a failure names the line of the page
        code = "\n" * text.count("\n", 0, block.start(1)) + block.group(1)
        exec(compile(code, str(page), "exec"), namespace)
