"""The command line: bench output (results.json, plots, tables), list, and bad input."""
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from jacopt import cli
from jacopt.benchmarks import _records, runner


def _fake_suite_module():
    """A suite with one problem, one first-order and one second-order method."""

    def run(quick=False, progress=None):
        _records.expect(progress, 2)
        recs = []
        for method, order, scale in (("adam", "first", 1.0), ("lm", "second", 0.01)):
            if progress:
                progress(f"toy / {method}")
            iters = list(range(1, 51))
            recs.append({
                "suite": "fake", "problem": "toy", "method": method, "order": order,
                "target_loss": 1e-6, "time_to_target_s": 0.5 * scale, "iters_to_target": 40,
                "final_loss": 1e-7, "compile_s": 0.1, "run_s": 0.6 * scale,
                "curve": {"iters": iters, "time_s": [i * scale / 100 for i in iters],
                          "loss": [10.0 ** (-i / 8) for i in iters]},
            })
        recs.append({"suite": "fake", "problem": "Misra1a/start1", "method": "lm",
                     "order": "second", "target_loss": 0.06, "time_to_target_s": 0.001,
                     "iters_to_target": 5, "final_loss": 0.06, "compile_s": 0.2,
                     "run_s": 0.001, "lre": 10.5})
        return recs

    return types.SimpleNamespace(run=run)


@pytest.fixture
def fake_suite(monkeypatch):
    monkeypatch.setitem(sys.modules, "jacopt.benchmarks.fake", _fake_suite_module())
    monkeypatch.setitem(runner.SUITES, "fake", runner.Suite("a toy suite for the CLI tests"))


def test_bench_writes_complete_results_and_plots(fake_suite, tmp_path, capsys):
    assert cli.main(["bench", "fake", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    records = json.loads((tmp_path / "results.json").read_text())
    header, body = records[0], records[1:]
    assert header["suite"] == "meta" and header["quick"] is True
    assert header["machine"]["cpu_count"] >= 1 and header["versions"]["jax"]
    # versions agree with the modules' own, and an importable peer is never recorded as
    # absent (jaxopt has no __version__, which once made it look missing)
    # (each from a different source than the runner's: it reads jax.__version__ and the
    # installed distributions' metadata)
    import jaxlib.version
    import optax
    assert header["versions"]["jax"] == importlib.metadata.version("jax")
    assert header["versions"]["jaxlib"] == jaxlib.version.__version__
    assert header["versions"]["optax"] == optax.__version__
    for name in ("optimistix", "jaxopt"):
        installed = importlib.util.find_spec(name) is not None
        assert (header["versions"][name] is not None) == installed, name
    assert len(body) == 3
    for rec in body:
        assert runner.missing_fields(rec) == []
    assert (tmp_path / "plots" / "fake-toy.png").stat().st_size > 1000
    # the comparison line is computed from the records: 0.5 s vs 0.005 s = 100x
    assert ("lm reached the target in 5.00 ms, 100.0x sooner than the best first-order method "
            "(adam, 500 ms)") in out.out
    assert "fake 2/2 " in out.err and out.err.rstrip().endswith("toy / lm")  # progress line


def test_summary_names_first_order_when_it_wins():
    recs = [
        {"suite": "s", "problem": "p", "method": "adam", "order": "first",
         "time_to_target_s": 0.1},
        {"suite": "s", "problem": "p", "method": "ggn", "order": "second",
         "time_to_target_s": 4.0},
    ]
    (line,) = runner.comparison_summary(recs)
    assert line == ("s/p: first-order adam reached the target in 100 ms, 40.0x sooner than the "
                    "best second-order method (ggn, 4.00 s)")


def test_bench_markdown_and_json_formats(fake_suite, tmp_path, capsys):
    assert cli.main(["bench", "fake", "--out", str(tmp_path), "--format", "markdown",
                     "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("| suite | problem | method |")
    assert "| 10.5 |" in text
    assert cli.main(["bench", "fake", "--out", str(tmp_path), "--format", "json",
                     "--no-plots"]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed[0]["suite"] == "meta" and len(parsed) == 4


def test_failing_suite_is_recorded_not_fatal(monkeypatch, tmp_path, capsys):
    def broken(quick=False, progress=None):
        raise RuntimeError("boom")

    monkeypatch.setitem(sys.modules, "jacopt.benchmarks.fake", types.SimpleNamespace(run=broken))
    monkeypatch.setitem(runner.SUITES, "fake", runner.Suite("broken"))
    assert cli.main(["bench", "fake", "--out", str(tmp_path), "--no-plots"]) == 1
    records = json.loads((tmp_path / "results.json").read_text())
    assert records[1]["error"] == "RuntimeError: boom"
    assert "suite 'fake' failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "nosuch"], "valid suites are nist, mlp, policy"),
        (["solve", "nist", "NoSuchProblem"], "valid names are Misra1a"),
        (["solve", "nist", "Misra1a", "--solver", "bfgs"], "valid solvers are lm, "),
        (["solve", "cute", "Misra1a"], "valid families are: nist"),
        (["solve", "nist", "Misra1a", "--start", "3"], "--start must be 1 or 2"),
    ],
)
def test_bad_input_exits_2_with_valid_names(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_malformed_command_line_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--format", "xml"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_list_names_suites_solvers_and_problems(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("nist", "mlp", "policy", "lm", "dogleg", "bfgs", "Misra1a", "Bennett5"):
        assert word in out


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "jacopt", "list"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Suites" in proc.stdout


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path):
    """The real default suites in quick mode (issue target: within 180 s on 2 cores; the time
    is printed by the benchmark, not asserted here)."""
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "jacopt", "bench", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((tmp_path / "results.json").read_text())
    suites = {r["suite"] for r in records[1:]}
    assert suites == {"nist", "mlp", "policy"}
    assert all(runner.missing_fields(r) == [] for r in records[1:])
    assert not [r for r in records[1:] if r.get("error")]
    assert (tmp_path / "plots" / "nist-lre.png").exists()
    assert any(p.startswith("mlp-") for p in os.listdir(tmp_path / "plots"))
    assert any(p.startswith("policy-") for p in os.listdir(tmp_path / "plots"))


def test_solve_exit_status_says_whether_the_solve_succeeded(capsys):
    assert cli.main(["solve", "nist", "Misra1a"]) == 0
    assert "XTOL (success)" in capsys.readouterr().out
    # plain Gauss-Newton from MGH09's far start fails (README, NIST section): exit 1, summary
    # printed all the same
    assert cli.main(["solve", "nist", "MGH09", "--solver", "gn"]) == 1
    out = capsys.readouterr().out
    assert "(failure)" in out and "LRE, worst parameter" in out


def test_list_into_a_closed_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m jacopt list | head -1", shell=True,
                          capture_output=True, text=True, timeout=300)
    assert proc.stdout.startswith("Suites")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
