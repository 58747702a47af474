"""Levenberg-Marquardt's dual form (fewer residuals than parameters): the damped step against
its closed form, and whole runs against the primal form on the same problem.

Appending zero residuals (with zero Jacobian rows) leaves the problem unchanged but makes
``m >= n``, so the same solve then takes the primal path; the two must produce the same
iterates up to rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt.linalg import dual_factor
from jacopt.solvers import LevenbergMarquardt
from jacopt.solvers import levenberg_marquardt as lm_module
from jacopt.solvers.least_squares_problem import LeastSquaresProblem
from jacopt.solvers.levenberg_marquardt import is_dual

M, N = 5, 9


def underdetermined(x, c):
    """``M`` smooth residuals of ``N`` parameters with a manifold of zero-residual solutions."""
    z = c @ x
    return jnp.tanh(z) + 0.3 * z ** 2 - 0.5 + 0.1 * x[:M] * x[M:2 * M - 1].sum()


def padded(x, c):
    return jnp.concatenate([underdetermined(x, c), jnp.zeros((N - M + 1,), x.dtype)])


@pytest.fixture(scope="module")
def coeffs():
    return jnp.asarray(np.random.default_rng(3).normal(size=(M, N)) / 3.0)


def test_the_dual_form_is_chosen_when_m_is_at_most_two_thirds_of_n_without_bounds():
    free = LeastSquaresProblem(residual=None, jacobian=None, args=())
    boxed = free._replace(lower=jnp.zeros(47), upper=jnp.ones(47))
    assert is_dual(free, 20, 47) and is_dual(free, 20, 30) and not is_dual(free, 21, 30)
    assert not is_dual(free, 40, 47) and not is_dual(free, 47, 47) and not is_dual(free, 54, 3)
    # an active set can leave as few free parameters as residuals: the primal form then has
    # a Gauss-Newton step, so bounded problems keep it
    assert not is_dual(boxed, 20, 47)


@pytest.mark.parametrize("rank_deficient", [False, True], ids=["full-rank", "rank-deficient"])
@pytest.mark.parametrize("lam", [1e-8, 0.3, 50.0])
def test_dual_damped_step_matches_the_closed_form(lam, rank_deficient):
    rng = np.random.default_rng(0)
    J = rng.normal(size=(M, N))
    if rank_deficient:  # two equal rows and a zero one: J J^T is singular, A A^T + lam I not
        J[1] = J[0]
        J[2] = 0.0
    r = rng.normal(size=M)
    d = rng.uniform(0.5, 3.0, size=N)
    A = J / d
    Q_top, S = dual_factor(jnp.asarray(A), jnp.asarray(lam))
    q = -np.asarray(Q_top) @ np.linalg.solve(np.asarray(S).T, r)
    p = q / d
    # the damped least-squares problem solved directly (LAPACK's SVD-based lstsq)
    stacked = np.vstack([J, np.sqrt(lam) * np.diag(d)])
    reference = -np.linalg.lstsq(stacked, np.concatenate([r, np.zeros(N)]), rcond=None)[0]
    # a rank-deficient J leaves part of r unreachable, and with that residual the damped
    # problem's condition is ~ ||A||^2 / lam (1e8 at lam = 1e-8): both methods then agree to
    # about eps * 1e8, not better
    tight = 1e-9 if not rank_deficient or lam > 1e-3 else 1e-6
    np.testing.assert_allclose(p, reference, rtol=tight, atol=1e-12)
    # S is the triangular factor of A A^T + lam I (never formed by the solver)
    np.testing.assert_allclose(np.asarray(S).T @ np.asarray(S), A @ A.T + lam * np.eye(M),
                               rtol=1e-10, atol=1e-10)
    # the solver's solve(b) = (A^T A + lam I)^{-1} A^T b (geodesic acceleration, Moré's update)
    b = rng.normal(size=M)
    solved = np.asarray(Q_top) @ np.linalg.solve(np.asarray(S).T, b)
    # (the minimiser of ||A y - b||^2 + lam ||y||^2, by lstsq: A^T A + lam I itself is too
    # ill-conditioned at lam = 1e-8 to be a reference)
    damped = np.vstack([A, np.sqrt(lam) * np.eye(N)])
    reference = np.linalg.lstsq(damped, np.concatenate([b, np.zeros(N)]), rcond=None)[0]
    np.testing.assert_allclose(solved, reference, rtol=tight, atol=1e-12)


def _histories(result):
    h = result.history
    k = int(result.num_steps) + 1
    return (np.asarray(h.value)[:k], np.asarray(h.damping)[:k], np.asarray(h.accepted)[:k],
            np.asarray(h.step_norm)[:k])


def assert_same_run(dual, primal):
    """The two solves accepted the same trials with the same costs, damping and step lengths
    while the cost still resolves the iterates (rounding differs afterwards), and both
    reached a zero residual."""
    assert bool(dual.success) and bool(primal.success), (dual.message, primal.message)
    value_d, damping_d, accepted_d, step_d = _histories(dual)
    value_p, damping_p, accepted_p, step_p = _histories(primal)
    k = int(np.sum(value_p > value_p[-1] * (1 + 1e-9) + 1e-16))
    assert k > 3
    np.testing.assert_array_equal(accepted_d[:k], accepted_p[:k])
    np.testing.assert_allclose(value_d[:k], value_p[:k], rtol=1e-6, atol=1e-24)
    np.testing.assert_allclose(damping_d[:k], damping_p[:k], rtol=1e-6)
    np.testing.assert_allclose(step_d[:k], step_p[:k], rtol=1e-6)
    assert float(dual.cost) < 1e-20 and float(primal.cost) < 1e-20


@pytest.mark.parametrize("options", [
    {},
    {"x_scale": 1.0},
    {"loss": "soft_l1", "f_scale": 0.2},
    {"solver": LevenbergMarquardt(geodesic=True)},
], ids=["jac-scale", "unit-scale", "soft_l1", "geodesic"])
def test_dual_and_primal_runs_take_the_same_steps(coeffs, options):
    x0 = jnp.linspace(-0.3, 0.5, N)
    dual = jacopt.least_squares(underdetermined, x0, args=(coeffs,), history=True,
                                max_steps=40, **options)
    primal = jacopt.least_squares(padded, x0, args=(coeffs,), history=True, max_steps=40,
                                  **options)
    assert_same_run(dual, primal)


def test_near_square_problems_keep_the_primal_form_with_the_same_steps(monkeypatch):
    """Above the crossover (here m = 8 of n = 9) the primal form runs with a singular ``R``
    (no Gauss-Newton step); forcing the dual form on the same problem gives the same run."""
    m, n = 8, 9
    c = jnp.asarray(np.random.default_rng(5).normal(size=(m, n)) / 3.0)
    x0 = jnp.linspace(-0.3, 0.5, n)
    free = LeastSquaresProblem(residual=None, jacobian=None, args=())
    assert not is_dual(free, m, n)

    def runs():
        # a fresh function per run: nothing compiled for one path is reused for the other
        def near_square(x, c):
            z = c @ x
            return jnp.tanh(z) + 0.3 * z ** 2 - 0.5
        return jacopt.least_squares(near_square, x0, args=(c,), history=True, max_steps=40)

    def spy(rule):
        # records every choice the solver made, so the test proves which form each run took
        calls = []

        def choose(problem, rows, cols):
            calls.append((rows, cols, rule(problem, rows, cols)))
            return calls[-1][2]
        return calls, choose

    chosen, choose = spy(is_dual)
    monkeypatch.setattr(lm_module, "is_dual", choose)
    primal = runs()
    assert chosen and set(chosen) == {(m, n, False)}
    forced, force = spy(lambda problem, rows, cols: rows < cols)
    monkeypatch.setattr(lm_module, "is_dual", force)
    dual = runs()
    assert forced and set(forced) == {(m, n, True)}
    assert_same_run(dual, primal)


def test_dual_form_under_vmap_and_jit(coeffs):
    starts = jnp.stack([jnp.linspace(-0.3, 0.5, N), jnp.linspace(0.2, -0.1, N),
                        jnp.full((N,), jnp.nan)])
    solve = jax.jit(jax.vmap(lambda x: jacopt.least_squares(underdetermined, x,
                                                            args=(coeffs,))))
    batch = solve(starts)
    assert bool(batch.success[0]) and bool(batch.success[1])
    assert str(batch.status_name[2]) == "NONFINITE"
    residuals = jax.vmap(underdetermined, (0, None))(batch.params[:2], coeffs)
    assert float(jnp.max(jnp.abs(residuals))) < 1e-10
