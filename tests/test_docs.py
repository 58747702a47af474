"""Every ```python block in docs/ runs as written, each in a fresh interpreter.

A block sets float64 itself when it needs it (as a user's script would). Text that is not meant
to run is fenced as ```text or ```console, which this test does not collect. A block may assert
what its comments claim; a failing assertion or exception fails the test.
"""
import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks():
    for page in sorted(DOCS.rglob("*.md")):
        for i, code in enumerate(FENCE.findall(page.read_text())):
            yield pytest.param(code, id=f"{page.relative_to(DOCS)}[{i}]")


BLOCKS = list(_blocks())


def test_the_docs_have_code_to_run():
    pages = {b.id.split("[")[0] for b in BLOCKS}
    assert len(BLOCKS) >= 10 and {"getting-started.md", "guide/least-squares.md",
                                  "guide/minimize.md", "guide/jacobians.md"} <= pages


@pytest.mark.parametrize("code", BLOCKS)
def test_docs_code_block_runs(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=DOCS.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
