"""The line-search state machines, driven trial by trial on one-dimensional functions whose
minimisers are known in closed form; the conditions are checked on the accepted step by direct
evaluation (not from the search's own bookkeeping)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacopt.solvers.line_search import (
    BacktrackingArmijo,
    StrongWolfe,
    cubic_minimizer,
    quadratic_minimizer,
)


def drive(search, phi, alpha0=1.0, min_step=0.0):
    """Run a search to the end, one trial per call of update, as a solver does."""
    dphi = jax.grad(phi)
    update = jax.jit(search.update)
    state = search.init(phi(0.0), dphi(0.0), alpha0, jnp.asarray(0.0), min_step=min_step)
    trials = []
    while not bool(state.finished):
        a = state.alpha
        trials.append(float(a))
        state = update(state, phi(a), dphi(a), jnp.asarray(a))
    return state, trials


PHIS = {
    # (phi, exact line minimiser)
    "quadratic": (lambda a: (a - 3.0) ** 2, 3.0),
    "far": (lambda a: (a - 1000.0) ** 2, 1000.0),
    "near": (lambda a: (a - 1e-3) ** 2, 1e-3),
    "quartic": (lambda a: (a - 0.3) ** 4 + 0.5 * (a - 0.3) ** 2, 0.3),
    # Moré & Thuente (1994) test function 1 with beta = 2: minimiser at sqrt(2)
    "more_thuente_1": (lambda a: -a / (a**2 + 2.0), np.sqrt(2.0)),
    "exp": (lambda a: jnp.exp(a) - 5.0 * a, np.log(5.0)),
}


@pytest.mark.parametrize("name", sorted(PHIS))
@pytest.mark.parametrize("alpha0", [1.0, 1e-4, 50.0])
def test_strong_wolfe_conditions_hold_at_the_accepted_step(name, alpha0):
    phi, _ = PHIS[name]
    search = StrongWolfe()
    state, trials = drive(search, phi, alpha0)
    assert bool(state.converged)
    a = float(state.alpha_lo)
    phi0, dphi0 = float(phi(0.0)), float(jax.grad(phi)(0.0))
    assert float(phi(a)) <= phi0 + search.c1 * a * dphi0
    assert abs(float(jax.grad(phi)(a))) <= search.c2 * abs(dphi0)
    # the state returns the accepted trial's own value and payload (no re-evaluation)
    assert float(state.value_lo) == pytest.approx(float(phi(a)), rel=1e-12)
    assert float(state.payload_lo) == a
    assert len(trials) <= 12


def test_tight_c2_lands_near_the_exact_minimiser():
    phi, a_star = PHIS["quartic"]
    search = StrongWolfe(c2=1e-3)
    state, _ = drive(search, phi)
    assert bool(state.converged)
    # |phi'(a)| <= 1e-3 |phi'(0)| and phi'' >= 1 near a_star bound |a - a_star|
    bound = 1e-3 * abs(float(jax.grad(phi)(0.0)))
    assert abs(float(state.alpha_lo) - a_star) <= bound


def test_cubic_interpolation_is_exact_on_a_cubic_and_quadratic_on_a_quadratic():
    f = lambda a: (a - 0.7) ** 2 * (a + 2.0)  # local minimiser at 0.7
    df = jax.grad(f)
    t, ok = cubic_minimizer(0.0, f(0.0), df(0.0), 2.0, f(2.0), df(2.0))
    assert bool(ok) and float(t) == pytest.approx(0.7, abs=1e-12)
    q = lambda a: 3.0 * (a - 0.25) ** 2 + 1.0
    t, ok = quadratic_minimizer(0.0, q(0.0), jax.grad(q)(0.0), 1.0, q(1.0))
    assert bool(ok) and float(t) == pytest.approx(0.25, abs=1e-12)
    _, ok = quadratic_minimizer(0.0, 0.0, -1.0, 1.0, -2.0)  # negative curvature
    assert not bool(ok)
    # no minimiser: reported as not ok (the interpolants divide without guards)
    assert not bool(quadratic_minimizer(1.0, 0.0, -1.0, 1.0, 0.0)[1])  # a == b
    assert not bool(cubic_minimizer(1.0, 0.0, -1.0, 1.0, 0.0, 1.0)[1])  # a == b
    # f = -a^3 - a through (0, 0, slope -1) and (1, -2, slope -4): no local minimum
    assert not bool(cubic_minimizer(0.0, 0.0, -1.0, 1.0, -2.0, -4.0)[1])
    # a straight line: no curvature, no minimiser
    assert not bool(cubic_minimizer(0.0, 1.0, -1.0, 2.0, -1.0, -1.0)[1])


def test_non_finite_trial_counts_as_too_long():
    # phi is NaN beyond 0.5 and its minimiser is 0.4: the search must shrink into the domain
    phi = lambda a: jnp.where(a > 0.5, jnp.nan, (a - 0.4) ** 2)
    for search in (StrongWolfe(), BacktrackingArmijo()):
        state, trials = drive(search, phi, alpha0=1.0)
        assert bool(state.converged)
        assert 0.0 < float(state.alpha_lo) <= 0.5
        assert np.isfinite(float(state.value_lo))
        assert trials[0] == 1.0 and trials[1] < 1.0


def test_no_decrease_possible_ends_at_zero_with_precision_flag():
    # the slope promises a decrease that rounding makes invisible
    phi = lambda a: 1.0 - 1e-30 * a
    state, trials = drive(StrongWolfe(), phi, alpha0=1.0, min_step=1e-6)
    assert bool(state.finished) and not bool(state.converged)
    assert float(state.alpha_lo) == 0.0 and bool(state.precision_limited)
    assert len(trials) < StrongWolfe().max_trials


def test_armijo_backtracking_accepts_sufficient_decrease_with_interpolated_steps():
    phi, _ = PHIS["near"]  # phi(0) = 1e-6, minimiser 1e-3: alpha = 1 is far too long
    search = BacktrackingArmijo()
    state, trials = drive(search, phi, alpha0=1.0)
    a = float(state.alpha_lo)
    assert bool(state.converged)
    assert float(phi(a)) <= float(phi(0.0)) + search.c1 * a * float(jax.grad(phi)(0.0))
    # each new trial lies in [0.1, 0.5] of the previous one
    ratios = np.array(trials[1:]) / np.array(trials[:-1])
    assert np.all((ratios >= 0.1 - 1e-12) & (ratios <= 0.5 + 1e-12))
    # Armijo does not need slopes: the same run without them
    update = jax.jit(lambda s, v: search.update(s, v))
    s = search.init(phi(0.0), jax.grad(phi)(0.0), 1.0, None)
    while not bool(s.finished):
        s = update(s, phi(s.alpha))
    assert float(s.alpha_lo) == a


def test_search_runs_under_vmap_with_per_member_results():
    search = StrongWolfe()
    centres = jnp.array([3.0, 1e-3, 1000.0])

    def solve(c):
        phi = lambda a: (a - c) ** 2
        dphi = jax.grad(phi)
        state = search.init(phi(0.0), dphi(0.0), 1.0, jnp.zeros(()))

        def body(state):
            a = state.alpha
            return search.update(state, phi(a), dphi(a), a)

        return jax.lax.while_loop(lambda s: ~s.finished, body, state)

    out = jax.jit(jax.vmap(solve))(centres)
    assert bool(jnp.all(out.converged))
    slopes = 2 * (out.alpha_lo - centres)
    assert bool(jnp.all(jnp.abs(slopes) <= 0.9 * 2 * centres))


def test_bad_constants_are_rejected():
    with pytest.raises(ValueError, match="0 < c1 < c2 < 1"):
        StrongWolfe(c1=0.5, c2=0.1)
    with pytest.raises(ValueError, match="max_trials"):
        StrongWolfe(max_trials=0)
    with pytest.raises(ValueError, match="c1"):
        BacktrackingArmijo(c1=1.5)
