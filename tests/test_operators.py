"""jacopt.jacobian_operator / hessian_operator: products against dense matrices computed
independently, one linearisation reused, usable under jit and by conjugate gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.sparse.linalg import cg

import jacopt
from jacopt._finite_differences import central_difference_jacobian
from jacopt.operators import JacobianOperator


def residuals(params, t, y):
    """Exponential-decay model a exp(-k t) + c minus data, params a pytree."""
    return params["a"] * jnp.exp(-params["k"] * t) + params["c"][0] - y


@pytest.fixture
def problem():
    t = jnp.linspace(0.0, 3.0, 12)
    y = 2.0 * jnp.exp(-1.3 * t) + 0.5 + 0.01 * jnp.sin(7 * t)
    params = {"a": jnp.array(1.5), "k": jnp.array(1.0), "c": jnp.array([0.2])}
    return params, t, y


def test_jacobian_operator_products_match_finite_difference_jacobian(problem):
    params, t, y = problem
    op = jacopt.jacobian_operator(residuals, params, t, y)
    J = central_difference_jacobian(lambda p: residuals(p, t, y), params)  # (12, 3)
    assert op.shape == (12, 3)
    np.testing.assert_allclose(op.value, residuals(params, t, y), rtol=1e-15)
    v = jnp.array([0.3, -1.0, 2.0])
    u = jnp.linspace(-1.0, 1.0, 12)
    np.testing.assert_allclose(op.mv(v), J @ np.asarray(v), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(op.rmv(u), J.T @ np.asarray(u), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(op.gn_mv(v), J.T @ (J @ np.asarray(v)), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(op.as_matrix(), J, rtol=1e-8, atol=1e-10)
    # flat order is ravel_pytree order: a, c, k (dict keys sorted)
    assert jacopt.TreeIndex(params).labels() == ["['a']", "['c'][0]", "['k']"]


def test_operators_linearise_once_and_reuse_it(problem):
    params, t, y = problem
    traces = []

    def counted(p, t, y):
        traces.append(1)
        return residuals(p, t, y)

    op = jacopt.jacobian_operator(counted, params, t, y)
    built = len(traces)
    for _ in range(3):
        op.mv(jnp.ones(3))
        op.rmv(jnp.ones(12))
        op.gn_mv(jnp.ones(3))
    assert len(traces) == built  # products never call f again

    def counted_loss(p):
        traces.append(1)
        return jnp.sum(residuals(p, t, y) ** 2)

    hop = jacopt.hessian_operator(counted_loss, params)
    built = len(traces)
    hop.mv(jnp.ones(3))
    hop.mv(jnp.zeros(3))
    assert len(traces) == built


def test_operator_crosses_jit_and_drives_conjugate_gradients(problem):
    """Gauss-Newton step: solve (J^T J) s = -J^T r by CG with gn_mv, never forming J."""
    params, t, y = problem

    @jax.jit
    def gauss_newton_step(p):
        op = jacopt.jacobian_operator(residuals, p, t, y)
        step, _ = cg(op.gn_mv, -op.rmv(op.value), tol=1e-14, maxiter=50)
        return step, op

    step, op = gauss_newton_step(params)
    assert isinstance(op, JacobianOperator)  # a pytree: returned from jit, still usable
    J = central_difference_jacobian(lambda p: residuals(p, t, y), params)
    np.testing.assert_allclose(op.gn_mv(step), J.T @ (J @ np.asarray(step)), rtol=1e-8)
    r = np.asarray(residuals(params, t, y))
    expected = np.linalg.lstsq(J, -r, rcond=None)[0]
    np.testing.assert_allclose(step, expected, rtol=1e-6)


def test_hessian_operator_matches_analytic_hessian_and_gradient():
    A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    f = lambda x: 0.5 * x @ A @ x + jnp.sum(jnp.cos(x))
    x = jnp.array([0.4, -1.1])
    op = jacopt.hessian_operator(f, x)
    x_np = np.asarray(x)
    H = np.asarray(A) - np.diag(np.cos(x_np))
    np.testing.assert_allclose(op.value, f(x), rtol=1e-15)
    np.testing.assert_allclose(op.grad, np.asarray(A) @ x_np - np.sin(x_np), rtol=1e-14)
    v = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(op.mv(v), H @ np.asarray(v), rtol=1e-14)
    np.testing.assert_allclose(op.rmv(v), op.mv(v))
    np.testing.assert_allclose(op.as_matrix(), H, rtol=1e-14)
    assert op.shape == (2, 2)


def test_hessian_operator_on_pytree_matches_dense_hessian(problem):
    params, t, y = problem
    loss = lambda p: 0.5 * jnp.sum(residuals(p, t, y) ** 2)
    op = jacopt.hessian_operator(loss, params)
    dense = jacopt.hessian(loss, as_matrix=True)(params)
    grad_fd = central_difference_jacobian(loss, params)[0]
    np.testing.assert_allclose(op.grad, grad_fd, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(op.as_matrix(), dense, rtol=1e-13)


def test_operators_float32_and_bad_input():
    x32 = jnp.array([0.5, 1.0], jnp.float32)
    op = jacopt.jacobian_operator(jnp.sin, x32)
    assert op.mv(jnp.ones(2, jnp.float32)).dtype == jnp.float32
    with pytest.raises(TypeError, match=r"argument 1 \(x, the point\).*integer"):
        jacopt.jacobian_operator(jnp.sin, jnp.arange(2))
    with pytest.raises(ValueError, match="scalar"):
        jacopt.hessian_operator(jnp.sin, jnp.ones(2))
    with pytest.raises(ValueError, match="empty"):
        jacopt.hessian_operator(jnp.sum, {})
