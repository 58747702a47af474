"""The triangular solves of the Gauss-Newton family (solvers/least_squares_problem.py), unrolled
into array operations for up to ``UNROLLED_MAX_N`` parameters, agree with SciPy's LAPACK, alone
and under vmap."""
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


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_triangular_solves_match_scipy(n):
    rng = np.random.default_rng(n)
    R = np.triu(rng.standard_normal((n, n))) + 3 * np.eye(n)
    b = rng.standard_normal(n)
    np.testing.assert_allclose(lsp.solve_upper(jnp.asarray(R), jnp.asarray(b)),
                               scipy.linalg.solve_triangular(R, b), rtol=1e-13)
    np.testing.assert_allclose(lsp.solve_upper_transposed(jnp.asarray(R), jnp.asarray(b)),
                               scipy.linalg.solve_triangular(R, b, trans="T"), rtol=1e-13)


def test_unrolled_solves_under_vmap_match_one_by_one():
    rng = np.random.default_rng(7)
    R = jnp.asarray(np.triu(rng.standard_normal((5, 3, 3))) + 3 * np.eye(3))
    b = jnp.asarray(rng.standard_normal((5, 3)))
    batched = jax.vmap(lsp.solve_upper)(R, b)
    for i in range(5):
        np.testing.assert_allclose(batched[i], scipy.linalg.solve_triangular(R[i], b[i]),
                                   rtol=1e-13)
