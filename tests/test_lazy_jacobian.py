"""LM's ``lazy_jacobian`` option (MINPACK's schedule: a trial's residuals only, J once the trial
is accepted): the same answers as the default schedule, checked against NIST's certified values
and SciPy, with J evaluated at the start and at accepted points only."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt.problems import nist
from jacopt.solvers import LevenbergMarquardt

from _ls_helpers import (
    DECAY_START,
    LOWER,
    UPPER,
    Y_OUTLIERS,
    T,
    Y,
    decay,
    scipy_decay_bounded,
    scipy_decay_soft_l1,
)

LAZY, EAGER = LevenbergMarquardt(lazy_jacobian=True), LevenbergMarquardt()


@pytest.mark.parametrize("start", [0, 1])
def test_misra1a_reaches_the_certified_values_with_one_jacobian_per_point(start):
    p = nist.load("Misra1a")
    x0 = jnp.asarray(p.starts[start])
    lazy = jacopt.least_squares(p.residual, x0, args=p.args, solver=LAZY)
    eager = jacopt.least_squares(p.residual, x0, args=p.args, solver=EAGER)
    assert bool(lazy.success) and p.lre(np.asarray(lazy.params)) >= 9
    np.testing.assert_allclose(lazy.params, eager.params, rtol=1e-9)
    # J at the start and after each accepted trial; r at every trial and with each J
    assert int(lazy.njev) == int(lazy.num_accepted) + 1
    assert int(lazy.nfev) == int(lazy.num_steps) + int(lazy.num_accepted) + 1
    assert int(lazy.num_steps) == int(lazy.num_accepted) + int(lazy.num_rejected)
    assert int(eager.njev) == int(eager.num_steps) + 1
    if int(lazy.num_rejected) > 0:
        assert int(lazy.njev) < int(eager.njev)


def test_bounds_match_scipy_trf():
    ref = scipy_decay_bounded()
    res = jacopt.least_squares(decay, jnp.asarray(DECAY_START), args=(T, Y), solver=LAZY,
                               bounds=(LOWER, UPPER))
    assert bool(res.success), res.status_name
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-8, atol=1e-10)


def test_soft_l1_loss_matches_scipy_trf():
    ref = scipy_decay_soft_l1()
    res = jacopt.least_squares(decay, jnp.asarray(DECAY_START), args=(T, Y_OUTLIERS),
                               solver=LAZY, loss="soft_l1", f_scale=0.1)
    assert bool(res.success), res.status_name
    np.testing.assert_allclose(res.params, ref.x, rtol=1e-7)


def test_nfev_counts_every_residual_evaluation_the_program_runs():
    # a callback in the residual function fires once per evaluation that actually runs (the
    # start is linearised once, not also evaluated for its residuals alone)
    p = nist.load("Misra1a")
    calls = []

    def residual(b, x, y):
        jax.debug.callback(lambda: calls.append(1))
        return p.residual(b, x, y)

    res = jacopt.least_squares(residual, jnp.asarray(p.starts[0]), args=p.args, solver=LAZY)
    jax.effects_barrier()
    assert bool(res.success) and len(calls) == int(res.nfev)

def test_a_nan_member_of_a_batch_fails_alone():
    p = nist.load("Misra1a")
    starts = jnp.stack([jnp.asarray(p.starts[0]), jnp.full(2, jnp.nan), jnp.asarray(p.starts[1])])
    solve = jax.vmap(lambda x0: jacopt.least_squares(p.residual, x0, args=p.args, solver=LAZY))
    res = solve(starts)
    assert [bool(v) for v in res.success] == [True, False, True]
    assert int(res.status[1]) == int(jacopt.Status.NONFINITE)
    np.testing.assert_allclose(res.params[0], res.params[2], rtol=1e-9)
