"""Run every seed example (examples/seed_*.py): each asserts its own answer to the user's
question."""
import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("seed_*.py"))


def test_all_five_seed_examples_exist():
    assert [p.name[:8] for p in EXAMPLES] == [f"seed_00{i}" for i in range(5)]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_seed_example_runs_and_its_assertions_hold(path, capsys):
    runpy.run_path(str(path), run_name="__main__")
    assert capsys.readouterr().out.strip()  # it printed its answer
