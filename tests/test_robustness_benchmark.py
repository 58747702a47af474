"""The robustness benchmark's judgement on a small run, against MINPACK's own driver output
(cminpack examples/ref/lmddrv.fortran.ref) for the same problems and starts."""
import jax
import pytest

from jacopt.benchmarks import robustness

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def records():
    return robustness.run(problems=["freudenstein_roth", "chebyquad_1_8"],
                          methods=["jacopt-lm", "scipy-lm"])


def _get(records, run, method):
    (rec,) = [r for r in records if r["problem"] == run and r["method"] == method]
    return rec


def test_records_and_solved_judgement(records):
    assert len(records) == 2 * 3 * 2
    for rec in records:
        assert rec["suite"] == "robustness" and rec["final_loss"] == pytest.approx(rec["F"] / 2)
        assert rec["false_success"] == (rec["success"] and not rec["solved"])
    # MINPACK's lmder ends at Freudenstein-Roth's local minimum from all three starts
    # (final l2 norm 6.9988752): an accepted optimum, so solved.
    for factor in ("1", "10", "100"):
        rec = _get(records, f"freudenstein_roth/x{factor}", "scipy-lm")
        assert rec["F"] == pytest.approx(6.9988752**2, rel=1e-7)
        assert rec["solved"] and rec["success"] and not rec["false_success"]
    # Chebyquad n = 1: x0 = 1/2 is a stationary point (a maximum), where MINPACK stops at once
    # with success (l2 norm 1.8862380): not solved, a false success. From 10 x0 and 100 x0 it
    # reaches the minimum (1.8842482).
    start = _get(records, "chebyquad_1_8/x1", "scipy-lm")
    assert start["F"] == pytest.approx(1.8862380**2, rel=1e-7) and start["nfev"] == 1
    assert not start["solved"] and start["false_success"]
    for factor in ("10", "100"):
        rec = _get(records, f"chebyquad_1_8/x{factor}", "scipy-lm")
        assert rec["F"] == pytest.approx(1.8842482**2, rel=1e-7) and rec["solved"]
    summary = {s["method"]: s for s in robustness.summary(records)}
    assert summary["scipy-lm"]["solved"] == 5 and summary["scipy-lm"]["false_successes"] == 1
    assert summary["scipy-lm"]["solved_x1"] == 1
    table = robustness.format_tables(records)
    assert "False successes" in table and "chebyquad_1_8/x1" in table


def test_missed_by_default_lists_runs_only_peers_solve():
    def rec(run, method, solved):
        return {"problem": run, "method": method, "solved": solved, "F": 1.0, "status": "X",
                "nfev": 3}

    records = [rec("a/x1", "jacopt-lm", False), rec("a/x1", "scipy-trf", True),
               rec("b/x1", "jacopt-lm", False), rec("b/x1", "jacopt-gn", True),
               rec("c/x1", "jacopt-lm", True), rec("c/x1", "scipy-lm", True)]
    missed = robustness.missed_by_default(records)
    assert [m["problem"] for m in missed] == ["a/x1"]          # another jacopt solver is no peer
    assert [r["method"] for r in missed[0]["solvers"]] == ["scipy-trf"]


def test_every_registered_solver_runs_once():
    import importlib

    registry = importlib.import_module("jacopt.least_squares").SOLVERS
    solvers = robustness.jacopt_solvers()
    assert "lm" in solvers
    assert len(solvers) == len({id(s) for s in registry.values()})
    with pytest.raises(ValueError, match="methods: unknown"):
        robustness.run(problems=["rosenbrock"], methods=["jacopt-nope"])
