"""jacopt.least_squares: answers against certified values and closed forms."""
import jax.numpy as jnp
import numpy as np

import jacopt
from jacopt.problems import nist


def exp_rise(b, x, y):
    return y - b[0] * (1.0 - jnp.exp(-b[1] * x))


def test_misra1a_both_starts_reach_certified_values():
    p = nist.load("Misra1a")
    for start in p.starts:
        res = jacopt.least_squares(exp_rise, jnp.asarray(start), args=p.args)
        assert bool(res.success), res.message
        assert p.lre(res.params) >= 9.0
        np.testing.assert_allclose(2 * float(res.cost), p.certified_rss, rtol=1e-9)
        assert int(res.num_accepted) + int(res.num_rejected) == int(res.num_steps)


def test_linear_problem_matches_lstsq():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 4))
    b = rng.normal(size=30)

    def fun(x, A, b):
        return A @ x - b

    res = jacopt.least_squares(fun, jnp.zeros(4), args=(jnp.asarray(A), jnp.asarray(b)))
    x_ref = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(res.params, x_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.jac, A, rtol=1e-14)
    np.testing.assert_allclose(res.grad, A.T @ (A @ x_ref - b), atol=1e-10)
