"""The small dense kernels of the Gauss-Newton family (solvers/least_squares_problem.py): the
unrolled Householder ``R`` and triangular solves used for up to ``UNROLLED_MAX_N`` parameters
agree with NumPy/SciPy's LAPACK, alone and under vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jacopt.solvers import least_squares_problem as lsp


def _tall(rng, p, q, cond=1e6):
    u, _ = np.linalg.qr(rng.standard_normal((p, q)))
    v, _ = np.linalg.qr(rng.standard_normal((q, q)))
    return u @ np.diag(np.logspace(0, -np.log10(cond), q)) @ v.T


@pytest.mark.parametrize("shape", [(14, 3), (5, 5), (8, 1), (30, 5), (40, 7)])
def test_r_factor_matches_lapack_up_to_row_signs(shape):
    a = _tall(np.random.default_rng(sum(shape)), *shape)
    r = np.asarray(lsp.r_factor(jnp.asarray(a)))
    ref = np.linalg.qr(a, mode="r")
    assert r.shape == ref.shape and np.allclose(np.tril(r, -1), 0.0)
    signs = np.sign(np.diag(r)) * np.sign(np.diag(ref))
    np.testing.assert_allclose(signs[:, None] * r, ref, atol=1e-13)


def test_r_factor_of_a_zero_column_stays_finite():
    a = np.random.default_rng(0).standard_normal((6, 3))
    a[:, 1] = 0.0
    r = np.asarray(lsp.r_factor(jnp.asarray(a)))
    assert np.all(np.isfinite(r)) and r[1, 1] == 0.0
    np.testing.assert_allclose(r.T @ r, a.T @ a, atol=1e-13)


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_triangular_solves_match_scipy(n):
    rng = np.random.default_rng(n)
    R = np.triu(rng.standard_normal((n, n))) + 3 * np.eye(n)
    b = rng.standard_normal(n)
    np.testing.assert_allclose(lsp.solve_upper(jnp.asarray(R), jnp.asarray(b)),
                               scipy.linalg.solve_triangular(R, b), rtol=1e-13)
    np.testing.assert_allclose(lsp.solve_upper_transposed(jnp.asarray(R), jnp.asarray(b)),
                               scipy.linalg.solve_triangular(R, b, trans="T"), rtol=1e-13)


def test_unrolled_kernels_under_vmap_match_one_by_one():
    rng = np.random.default_rng(7)
    a = jnp.asarray(rng.standard_normal((5, 9, 3)))
    batched = jax.vmap(lsp.r_factor)(a)
    for i in range(5):
        np.testing.assert_allclose(batched[i], lsp.r_factor(a[i]), atol=1e-14)
