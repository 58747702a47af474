"""The command line's listing and version, and what `jacopt bench` shows: time units, skipped
peers, progress counts, the suite registry and the plots' axes and legend."""
import importlib
import importlib.metadata
import io
import sys
import types

import matplotlib
import numpy as np
import pytest

from jacopt import cli
from jacopt.benchmarks import _records, runner

matplotlib.use("Agg")


def _section(text: str, title: str) -> list[str]:
    """The indented lines under the line starting with ``title`` (up to the next blank line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    out = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        out.append(line)
    return out


# ------------------------------------------------------------------------------------------
# jacopt list, jacopt --version
# ------------------------------------------------------------------------------------------

def _listed_solver_names(out: str) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    entry = None
    for line in _section(out, "Solvers"):
        if line.startswith("  ") and not line.startswith("    "):
            entry = line.strip().rstrip(":")
            names[entry] = set()
        else:
            listed = line.strip().split("  ")[0]
            names[entry] |= {n.strip() for n in listed.split(",")}
    return names


def test_list_shows_every_registered_solver(monkeypatch, capsys):
    """The listing is the registries' keys, read at run time: a solver added to a registry
    (as a new bounded minimiser will be) is listed without a change to the command line."""
    minimize_module = importlib.import_module("jacopt.minimize")
    least_squares_module = importlib.import_module("jacopt.least_squares")

    class NewSolver:
        """A solver registered by a test."""

    monkeypatch.setitem(minimize_module.SOLVERS, "test-solver", NewSolver)
    assert cli.main(["list"]) == 0
    listed = _listed_solver_names(capsys.readouterr().out)
    assert listed["least_squares"] == set(least_squares_module.SOLVERS)
    assert listed["minimize"] == set(minimize_module.SOLVERS)
    assert {"newton-cg", "test-solver"} <= listed["minimize"]


def test_list_names_only_problem_families_that_solve_accepts(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    families = [line.strip().split(":")[0].split(" (")[0]
                for line in _section(out, "Problems")
                if line.startswith("  ") and not line.startswith("    ")]
    assert families == ["nist"]
    for family in families:
        assert cli.main(["solve", family, "NoSuchProblem"]) == 2
        err = capsys.readouterr().err
        assert "unknown problem family" not in err and "valid names are" in err


def test_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"jacopt {importlib.metadata.version('jacopt')}"


def test_solve_accepts_every_least_squares_solver_name(monkeypatch, capsys):
    """`solve --solver` checks against the registry (aliases included), not a copy of it."""
    registry = importlib.import_module("jacopt.least_squares").SOLVERS
    assert cli.main(["solve", "nist", "Misra1a", "--solver", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in registry)


# ------------------------------------------------------------------------------------------
# Times with three significant digits
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, text", [
    (None, "—"), (0.0, "0 s"), (2.345678, "2.35 s"), (12.34, "12.3 s"), (123.4, "123 s"),
    (1234.5, "1230 s"), (0.5, "500 ms"), (0.0123456, "12.3 ms"), (0.000456789, "457 us"),
    (4.5e-6, "4.50 us"), (7e-9, "7.00 ns"),
    (0.9996, "1.00 s"), (0.00099996, "1.00 ms"),  # rounding carries into the next unit
])
def test_format_seconds_keeps_three_significant_digits(seconds, text):
    assert runner.format_seconds(seconds) == text


def test_table_prints_every_time_with_its_unit():
    records = [{"suite": "s", "problem": "p", "method": "m", "order": "second",
                "target_loss": 1e-6, "time_to_target_s": 0.000123456, "iters_to_target": 3,
                "final_loss": 1e-7, "compile_s": 1.23456, "run_s": 0.0456789}]
    table = runner.format_table(records, "table")
    head, _, row = table.splitlines()[:3]
    cells = row.split()
    assert "123 us" in row and "1.23 s" in row and "45.7 ms" in row, row
    assert "[s]" not in head
    markdown = runner.format_table(records, "markdown")
    assert "| 123 us |" in markdown and "| 45.7 ms |" in markdown
    assert len(cells) == 13  # three times, each two words


# ------------------------------------------------------------------------------------------
# Why a peer was skipped
# ------------------------------------------------------------------------------------------

FAKE_SUITE = "fake-peers"
FAKE_MODULE = "_jacopt_tests_fake_peer_suite"
"""A fake suite's name and module: outside ``jacopt.benchmarks``, so no real suite or module
(such as ``jacopt.benchmarks.peers``) is shadowed while the test runs."""


def _peer_suite():
    def run(quick=False, progress=None):
        base = dict(suite=FAKE_SUITE, problem="toy", order="second", target_loss=1e-6)
        return [
            _records.make_record(method="jacopt-lm", losses=[1.0, 1e-8], run_s=1e-3,
                                 compile_s=0.1, **base),
            _records.skipped_record(method="optimistix-lm", note="optimistix is not "
                                    "installed (the bench extra)", **base),
            _records.skipped_record(method="newpeer-bfgs", note="skipped: NotImplementedError: "
                                    "no bounds", **base),
        ]

    return types.SimpleNamespace(run=run)


def test_bench_says_on_screen_why_a_peer_was_skipped(monkeypatch, tmp_path, capsys):
    real_version = importlib.metadata.version

    def version(name):
        if name == "optimistix":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setitem(sys.modules, FAKE_MODULE, _peer_suite())
    monkeypatch.setitem(runner.SUITES, FAKE_SUITE, runner.Suite("skips", module=FAKE_MODULE))
    assert cli.main(["bench", FAKE_SUITE, "--out", str(tmp_path), "--no-plots"]) == 0
    out = capsys.readouterr()
    hint = "pip install -e '.[bench]'"
    assert f"optimistix not installed: its runs are skipped; {hint}" in out.err
    assert (f"{FAKE_SUITE}/optimistix-lm (1 of 1 runs): optimistix not installed: skipped; {hint}"
            in out.out)
    assert (f"{FAKE_SUITE}/newpeer-bfgs (1 of 1 runs): skipped: skipped: NotImplementedError: "
            "no bounds" in out.out)
    assert "jacopt-lm (" not in out.out  # a measured run is not listed as skipped


def test_failed_runs_are_listed_with_their_error():
    rec = _records.guarded(lambda: 1 / 0, suite="s", problem="p", method="m", order="first",
                           target_loss=1.0)
    (line,) = runner.skipped_summary([rec])
    assert line == "s/m (1 of 1 runs): failed: ZeroDivisionError: division by zero"


# ------------------------------------------------------------------------------------------
# Progress counted within each suite
# ------------------------------------------------------------------------------------------

def test_progress_counts_items_within_each_suite():
    stream = io.StringIO()
    progress = runner.Progress(["nist", "mlp"], stream=stream)
    progress.begin_suite(0)
    _records.expect(progress, 3)
    for name in ("a", "b", "c"):
        progress(f"{name} / lm")
    progress.begin_suite(1)
    records = _records.run_methods("mlp", [("p", m, "second", 1.0, lambda: {"ok": True})
                                           for m in ("x", "y")], progress)
    lines = stream.getvalue().splitlines()
    assert [line.split("]")[1].split()[:2] for line in lines] == [
        ["nist", "1/3"], ["nist", "2/3"], ["nist", "3/3"], ["mlp", "1/2"], ["mlp", "2/2"]]
    assert lines[-1].endswith("p / y") and len(records) == 2


def test_nist_suite_announces_as_many_items_as_it_shows(monkeypatch):
    import jax

    from jacopt.benchmarks import nist

    monkeypatch.setattr(nist, "_run_jax_method", lambda *a, **k: [])
    monkeypatch.setattr(nist, "_run_scipy", lambda *a, **k: [])
    progress = runner.Progress(["nist"], stream=io.StringIO())
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        nist.run(quick=True, progress=progress)
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert progress.count == progress.total > 0


def test_minimize_suite_announces_as_many_items_as_it_shows(monkeypatch):
    from jacopt.benchmarks import minimize

    monkeypatch.setattr(_records, "guarded", lambda thunk, **identity: dict(identity))
    monkeypatch.setattr(minimize, "newton_history", lambda: {})
    monkeypatch.setattr(minimize, "units_check", lambda names: {})
    progress = runner.Progress(["minimize"], stream=io.StringIO())
    minimize.run(quick=True, progress=progress)
    assert progress.count == progress.total > 0


# ------------------------------------------------------------------------------------------
# The suite registry
# ------------------------------------------------------------------------------------------

def test_every_registered_suite_has_a_run_with_quick_and_progress():
    import inspect

    for name, suite in runner.SUITES.items():
        module = importlib.import_module(suite.module or f"jacopt.benchmarks.{name}")
        parameters = inspect.signature(module.run).parameters
        assert {"quick", "progress"} <= set(parameters), name


def test_registry_decides_the_default_run_and_the_module(monkeypatch, tmp_path, capsys):
    assert runner.DEFAULT_SUITES == tuple(n for n, s in runner.SUITES.items() if s.default)
    assert set(runner.DEFAULT_SUITES) == {"nist", "mlp", "policy"}

    def run(quick=False, progress=None):
        return [_records.skipped_record(suite="elsewhere", problem="p", method="m",
                                        order="first", target_loss=1.0, note=f"quick={quick}")]

    monkeypatch.setitem(sys.modules, "some_package.some_suite", types.SimpleNamespace(run=run))
    monkeypatch.setitem(runner.SUITES, "elsewhere",
                        runner.Suite("a suite in another module", module="some_package.some_suite"))
    assert cli.main(["bench", "elsewhere", "--quick", "--out", str(tmp_path), "--no-plots"]) == 0
    assert "elsewhere/m (1 of 1 runs): skipped: quick=True" in capsys.readouterr().out
    assert cli.main(["list"]) == 0
    assert "elsewhere  a suite in another module" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# Plots: the log axis stops at round-off; the LRE legend covers no bar
# ------------------------------------------------------------------------------------------

def _gap_records():
    """Two methods on a gap ``J* - J`` that starts at 0.5: one reaches round-off and then reads
    0 and -2e-16 (as the policy suite's do), one is a slow first-order method."""
    fast = [0.5, 1e-3, 1e-8, 3e-17, 0.0, -2.2e-16, 0.0]
    slow = list(0.5 * np.exp(-0.05 * np.arange(7)))
    recs = []
    for method, order, loss in (("newton", "second", fast), ("adam", "first", slow)):
        iters = list(range(len(loss)))
        recs.append({"suite": "policy", "problem": "gap", "method": method, "order": order,
                     "target_loss": 1e-10,
                     "curve": {"iters": iters, "time_s": [1e-3 * (i + 1) for i in iters],
                               "loss": loss}})
    return recs


def test_gap_axis_stops_at_round_off():
    import matplotlib.pyplot as plt

    eps = np.finfo(float).eps
    fig = runner.plot_curves(_gap_records())
    try:
        for ax in fig.axes[:2]:
            bottom, top = ax.get_ylim()
            # the floor: max(smallest positive gap 3e-17, eps * 0.5) = 1.1e-16, halved for room
            assert bottom == pytest.approx(eps * 0.5 / 2)
            assert top == pytest.approx(5.0)  # ten times the largest start
            # the curves that reached round-off are drawn on the floor, not dropped
            drawn = np.concatenate([line.get_ydata() for line in ax.get_lines()[:2]])
            assert np.nanmin(drawn) == pytest.approx(eps * 0.5)
    finally:
        plt.close(fig)


def test_loss_axis_keeps_real_small_losses_and_the_target():
    # a least-squares cost reaching 1e-32 is a real value, not round-off: it stays in view
    bottom, top, roundoff = runner.loss_limits([[1.0, 1e-5, 1e-32]], target=1e-10)
    assert (bottom, top, roundoff) == (pytest.approx(0.5e-32), pytest.approx(10.0), False)
    # a target below every curve stays in view; a diverging curve does not stretch the top
    bottom, top, _ = runner.loss_limits([[1.0, 1e3, 1e14]], target=1e-10)
    assert bottom == pytest.approx(0.5e-10) and top == pytest.approx(10.0)


def _overlap(a, b) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0


def test_lre_legend_covers_no_bar():
    import matplotlib.pyplot as plt

    methods = ["jacopt-lm", "jacopt-gn", "jacopt-dogleg", "scipy-lm", "scipy-trf",
               "optimistix-lm", "jaxopt-lm"]
    runs = [f"P{i}/start{s}" for i in range(8) for s in (1, 2)]
    nist = [{"suite": "nist", "problem": run, "method": m, "lre": 11.0 - 0.1 * j}
            for run in runs for j, m in enumerate(methods)]
    fig = runner.plot_lre(nist)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        legend = ax.get_legend().get_window_extent(renderer)
        bars = [patch.get_window_extent(renderer) for patch in ax.patches]
        assert len(bars) == len(nist)
        assert not [bar for bar in bars if _overlap(bar, legend)]
        # and the legend is inside the figure
        figure = fig.bbox
        assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 and legend.y1 <= figure.y1
    finally:
        plt.close(fig)
