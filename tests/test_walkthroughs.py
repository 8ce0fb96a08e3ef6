"""The walkthroughs in docs/walkthroughs run as written: every Python block of a page, in
order, in one namespace (their asserts check the notes' numbers)."""
import pathlib
import re

import pytest

PAGES = sorted((pathlib.Path(__file__).resolve().parents[1] / "docs" / "walkthroughs")
               .glob("*.md"))


def test_there_are_walkthroughs():
    assert len(PAGES) >= 2


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_walkthrough_runs(page):
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert blocks
    namespace = {}
    for code in blocks:
        exec(compile(code, str(page), "exec"), namespace)
