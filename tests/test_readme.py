"""The README's quick start runs and prints what the README says it prints."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_quick_start_runs_and_its_comments_hold():
    code = _python_blocks()[0]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "XTOL" in out.splitlines()[0]
    assert out.splitlines()[1].strip() == "11.0"
    assert "['XTOL' 'XTOL' 'NONFINITE']" in out
    assert "GTOL 0.5" in out


def test_set_up_commands_are_the_two_ci_runs():
    text = README.read_text()
    block = re.search(r"## Set up\n\n```\n(.*?)```", text, re.S).group(1)
    assert block.strip().splitlines() == ['pip install -e ".[dev]"', "pytest"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in ci and "\npytest\n" in ci


def test_readme_stays_a_front_door():
    """At most about 150 lines (issue 16): the figures live in docs/benchmarks.md."""
    assert len(README.read_text().splitlines()) <= 150
