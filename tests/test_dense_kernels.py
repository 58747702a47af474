"""The small dense kernels of the Gauss-Newton family (solvers/least_squares_problem.py): the
triangular solves (unrolled into array operations for up to ``UNROLLED_MAX_N`` parameters) and
the unrolled Householder ``R`` used under vmap agree with NumPy/SciPy's LAPACK, alone and under
vmap; least_squares knows when it runs under vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jacopt.linalg import dense


def _tall(rng, p, q, cond=1e6):
    u, _ = np.linalg.qr(rng.standard_normal((p, q)))
    v, _ = np.linalg.qr(rng.standard_normal((q, q)))
    return u @ np.diag(np.logspace(0, -np.log10(cond), q)) @ v.T


def _assert_r_of(r, a, atol):
    """``r`` is LAPACK's R factor of ``a`` up to row signs, with exact zeros below the diagonal
    (the solvers multiply by the whole of R)."""
    ref = np.linalg.qr(a, mode="r")
    assert r.shape == ref.shape and np.all(np.tril(r, -1) == 0.0)
    signs = np.sign(np.diag(r)) * np.sign(np.diag(ref))
    np.testing.assert_allclose(signs[:, None] * r, ref, atol=atol)


@pytest.mark.parametrize("shape", [(14, 3), (5, 5), (8, 1), (30, 5), (40, 4), (1, 1)])
def test_unrolled_r_factor_matches_lapack_up_to_row_signs(shape):
    assert shape[1] <= dense.UNROLLED_MAX_N + 1  # larger q falls back to LAPACK itself
    a = _tall(np.random.default_rng(sum(shape)), *shape)
    _assert_r_of(np.asarray(dense.r_factor(jnp.asarray(a), unrolled=True)), a, 1e-13)


def _stacked(rng, n, lam):
    """Levenberg-Marquardt's per-trial matrix ``[R | qtr; sqrt(lam) D | 0]`` (2n x (n+1)):
    its top block is already triangular."""
    top = np.linalg.qr(rng.standard_normal((n + 3, n + 1)), mode="r")[:n]
    bottom = np.hstack([np.diag(np.sqrt(lam) * rng.uniform(0.5, 2.0, n)), np.zeros((n, 1))])
    return np.vstack([top, bottom])


@pytest.mark.parametrize("dtype, atol", [(np.float64, 1e-13), (np.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(14, 3), (14, 5), (6, 6), (8, 1), ("stacked", 4)])
def test_unrolled_r_factor_under_vmap_matches_each_member(shape, dtype, atol):
    # the form exists for batches: every member of a vmapped call gets the R it gets alone
    rng = np.random.default_rng(3)
    if shape[0] == "stacked":
        n = shape[1]
        batch = np.stack([_stacked(rng, n, lam) for lam in (1e-12, 1e-3, 1.0, 1e6)])
    else:
        batch = np.stack([_tall(rng, *shape, cond) for cond in (1.0, 1e3, 1e5, 1e8)])
    batch = batch.astype(dtype)
    rs = np.asarray(jax.vmap(lambda a: dense.r_factor(a, unrolled=True))(jnp.asarray(batch)))
    assert rs.dtype == dtype
    for a, r in zip(batch, rs):
        alone = np.asarray(dense.r_factor(jnp.asarray(a), unrolled=True))
        np.testing.assert_allclose(r, alone, rtol=10 * np.finfo(dtype).eps, atol=atol * 1e-3)
        _assert_r_of(r.astype(np.float64), a.astype(np.float64), atol)


def test_unrolled_r_factor_of_a_zero_column_stays_finite():
    a = np.random.default_rng(0).standard_normal((6, 3))
    a[:, 1] = 0.0
    r = np.asarray(dense.r_factor(jnp.asarray(a), unrolled=True))
    assert np.all(np.isfinite(r)) and r[1, 1] == 0.0
    np.testing.assert_allclose(r.T @ r, a.T @ a, atol=1e-13)


def test_least_squares_knows_when_it_runs_under_vmap():
    from jacopt.least_squares import _under_vmap

    seen = []
    jax.vmap(lambda x: seen.append(_under_vmap(x)) or x)(jnp.ones((3, 2)))
    assert seen == [True] and not _under_vmap(jnp.ones(2))
    jax.vmap(lambda y: seen.append(_under_vmap(jnp.ones(2), (y,))) or y)(jnp.ones(3))
    assert seen[-1] is True  # batched data, unbatched start


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_triangular_solves_match_scipy(n):
    rng = np.random.default_rng(n)
    R = np.triu(rng.standard_normal((n, n))) + 3 * np.eye(n)
    b = rng.standard_normal(n)
    np.testing.assert_allclose(dense.solve_upper(jnp.asarray(R), jnp.asarray(b)),
                               scipy.linalg.solve_triangular(R, b), rtol=1e-13)
    np.testing.assert_allclose(dense.solve_upper_transposed(jnp.asarray(R), jnp.asarray(b)),
                               scipy.linalg.solve_triangular(R, b, trans="T"), rtol=1e-13)


def test_unrolled_solves_under_vmap_match_one_by_one():
    rng = np.random.default_rng(7)
    R = jnp.asarray(np.triu(rng.standard_normal((5, 3, 3))) + 3 * np.eye(3))
    b = jnp.asarray(rng.standard_normal((5, 3)))
    batched = jax.vmap(dense.solve_upper)(R, b)
    for i in range(5):
        np.testing.assert_allclose(batched[i], scipy.linalg.solve_triangular(R[i], b[i]),
                                   rtol=1e-13)
