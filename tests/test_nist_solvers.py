"""Every least-squares solver on the NIST StRD problems, with DEFAULT settings, scored by LRE
against NIST's certified parameters (the issue's target: LRE >= 6 on every run).

Both starts of a problem are solved in one vmapped call (one compile per problem and solver),
compiled with XLA's classic CPU emitters, which compile these small loops about twice as fast
(the same operations; this only shortens the test run).
Default run: every solver on the lower and average sets (about 25 s of the GN and dogleg
average cases on this 2-core machine). Marked slow (``pytest -m slow
tests/test_nist_solvers.py``): the higher set for every solver (each problem costs one compile
of a few seconds).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt.problems import nist

from _ls_helpers import FAST_COMPILE

SOLVERS = ("lm", "gn", "dogleg")
# Levenberg-Marquardt reaches float64's limit on every run (LRE >= 10 in
# `python -m jacopt.benchmarks.nist`); the target for every solver is 6.
MIN_LRE = {"lm": 9.0, "gn": 6.0, "dogleg": 6.0}


def solve_both_starts(problem, solver):
    args = tuple(jnp.asarray(a) for a in problem.args)

    def one(x0):
        return jacopt.least_squares(problem.residual, x0, args=args, solver=solver)

    return jax.jit(jax.vmap(one), compiler_options=FAST_COMPILE)(jnp.asarray(problem.starts))


def check(name, solver):
    problem = nist.load(name)
    res = solve_both_starts(problem, solver)
    lres = [problem.lre(np.asarray(res.params[i])) for i in range(2)]
    statuses = list(res.status_name)
    assert all(bool(s) for s in res.success), (name, solver, statuses, lres)
    assert min(lres) >= MIN_LRE[solver], (name, solver, statuses, lres)
    # the cost is the certified one (Lanczos1's certificate is below float64's reach)
    if name != "Lanczos1":
        np.testing.assert_allclose(2 * np.asarray(res.cost), problem.certified_rss, rtol=1e-7)
    counts = np.asarray(res.num_accepted) + np.asarray(res.num_rejected)
    np.testing.assert_array_equal(counts, np.asarray(res.num_steps))


# Runs that Gauss-Newton and dogleg miss from NIST's far start (measured with
# `python -m jacopt.benchmarks.nist`): plain GN diverges on a nearly singular Jacobian; both stop
# at a stationary point that is not the optimum on MGH17 and exhaust max_steps on MGH09. Marked
# strict xfail, so a fix shows up as an unexpected pass instead of going unnoticed.
KNOWN_MISSES = {
    ("MGH17", "gn"): "GN stops at a flat point (cost 0.55) from start 1",
    ("MGH17", "dogleg"): "dogleg stops at a local minimum (cost 1.2e-2) from start 1",
    ("MGH09", "gn"): "GN reaches max_steps from start 1",
    ("MGH09", "dogleg"): "dogleg reaches max_steps from start 1",
    ("MGH10", "gn"): "GN reaches max_steps from start 1",
    ("Eckerle4", "gn"): "GN reaches max_steps from start 1",
    ("Rat43", "gn"): "GN reaches max_steps from start 1",
}


def _cases(names, solvers):
    return [
        pytest.param(name, solver, marks=pytest.mark.xfail(strict=True,
                                                          reason=KNOWN_MISSES[name, solver]))
        if (name, solver) in KNOWN_MISSES else pytest.param(name, solver)
        for name in names for solver in solvers
    ]


LOWER = [n for n in nist.NAMES if nist.DIFFICULTY[n] == "lower"]
AVERAGE = [n for n in nist.NAMES if nist.DIFFICULTY[n] == "average"]
HIGHER = [n for n in nist.NAMES if nist.DIFFICULTY[n] == "higher"]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("name", LOWER)
def test_lower(name, solver):
    check(name, solver)


@pytest.mark.parametrize("name, solver", _cases(AVERAGE, SOLVERS))
def test_average(name, solver):
    check(name, solver)


@pytest.mark.slow
@pytest.mark.parametrize("name, solver", _cases(HIGHER, SOLVERS))
def test_higher(name, solver):
    check(name, solver)
