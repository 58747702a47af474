"""sparse_jacobian / sparse_hessian against dense jax.jacfwd / jax.hessian."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

import jacopt
from jacopt.problems.brusselator import (
    broyden_tridiagonal_residual,
    broyden_tridiagonal_start,
    brusselator_residual,
    brusselator_start,
)
from jacopt.sparse import sparse_hessian, sparse_jacobian
from jacopt.sparsity import jacobian_sparsity


def _jacfwd(f):
    return jax.jit(jax.jacfwd(f))


def _point(n, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n,), minval=0.5, maxval=1.5)


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
def test_brusselator_values_equal_jacfwd(mode):
    x = _point(2 * 8 * 8)
    jac = sparse_jacobian(brusselator_residual, mode=mode)
    J = jac(x) if mode == "auto" else jax.jit(jac)(x)  # eager once, jitted otherwise
    assert isinstance(J, jsparse.BCOO) and J.shape == (128, 128)
    np.testing.assert_allclose(J.todense(), _jacfwd(brusselator_residual)(x), atol=1e-12)
    plan = jac.plan(x)
    assert plan.num_colors < 128 and plan.lower_bound == 6
    assert J.nse == plan.pattern.nnz == 6 * 128


def test_rectangular_and_pytree_arguments():
    def f(params, data):
        r = params["a"][:, None] * data[None, :] + params["b"]
        return {"r": r.ravel(), "s": jnp.sin(params["a"]).sum()}

    params = {"a": _point(3), "b": jnp.array(0.3)}
    data = _point(4, 1)
    J = jax.jit(sparse_jacobian(f))(params, data)
    dense = _jacfwd(lambda p: jax.flatten_util.ravel_pytree(f(p, data))[0])(params)
    dense = jnp.concatenate([dense["a"], dense["b"][:, None]], axis=1)
    np.testing.assert_allclose(J.todense(), dense, atol=1e-12)
    Jd = jax.jit(sparse_jacobian(f, argnums=1))(params, data)
    assert Jd.shape == (13, 4)
    np.testing.assert_allclose(
        Jd.todense(),
        _jacfwd(lambda d: jax.flatten_util.ravel_pytree(f(params, d))[0])(data), atol=1e-12)


def test_under_jit_and_vmap():
    jac = sparse_jacobian(broyden_tridiagonal_residual)
    x = broyden_tridiagonal_start(50) * _point(50)
    J = jax.jit(jac)(x)
    np.testing.assert_allclose(J.todense(), _jacfwd(broyden_tridiagonal_residual)(x))
    assert jac.plan(x).num_colors == 3
    tabu = sparse_jacobian(broyden_tridiagonal_residual, color_effort=100)
    np.testing.assert_allclose(jax.jit(tabu)(x).todense(), J.todense())
    X = jnp.stack([x, 2 * x, -x])
    Jb = jax.jit(jax.vmap(jac))(X)
    assert Jb.shape == (3, 50, 50)
    np.testing.assert_allclose(Jb.todense(), jax.vmap(jax.jacfwd(broyden_tridiagonal_residual))(X))


def test_float32_inputs():
    x = _point(20).astype(jnp.float32)
    J = jax.jit(sparse_jacobian(broyden_tridiagonal_residual))(x)
    assert J.dtype == jnp.float32
    np.testing.assert_allclose(J.todense(), _jacfwd(broyden_tridiagonal_residual)(x),
                               rtol=1e-6)


@pytest.mark.parametrize("kind", ["numpy", "scipy", "bcoo"])
def test_user_patterns_of_each_kind(kind):
    x = _point(2 * 6 * 6)
    pattern = jacobian_sparsity(brusselator_residual, x).toarray()
    given = {"numpy": pattern, "scipy": sp.csc_matrix(pattern),
             "bcoo": jsparse.BCOO.fromdense(pattern.astype(np.float32))}[kind]
    J = jax.jit(sparse_jacobian(brusselator_residual, sparsity=given, check=True))(x)
    np.testing.assert_allclose(J.todense(), _jacfwd(brusselator_residual)(x), atol=1e-12)


def test_a_superset_pattern_still_gives_exact_values():
    x = _point(30)
    band = sp.diags_array([np.ones(30 - abs(k)) for k in range(-3, 4)], offsets=range(-3, 4))
    J = jax.jit(sparse_jacobian(broyden_tridiagonal_residual, sparsity=band))(x)
    np.testing.assert_allclose(J.todense(), _jacfwd(broyden_tridiagonal_residual)(x))


def test_wrong_shape_pattern_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"sparsity has shape \(5, 5\).*\(30, 30\)"):
        sparse_jacobian(broyden_tridiagonal_residual, sparsity=np.eye(5, dtype=bool))(_point(30))
    with pytest.raises(ValueError, match="2-D"):
        sparse_jacobian(broyden_tridiagonal_residual, sparsity=np.ones(5, bool))
    with pytest.raises(ValueError, match="mode"):
        sparse_jacobian(broyden_tridiagonal_residual, mode="backward")


def test_check_catches_a_pattern_missing_a_nonzero():
    x = _point(30)
    diagonal_only = np.eye(30, dtype=bool)
    with pytest.raises(ValueError, match=r"misses nonzeros.*\(0, 1\)"):
        sparse_jacobian(broyden_tridiagonal_residual, sparsity=diagonal_only, check=True)(x)
    # Under jit the check runs at a random point when the plan is built.
    with pytest.raises(ValueError, match="misses nonzeros"):
        jax.jit(sparse_jacobian(broyden_tridiagonal_residual, sparsity=diagonal_only,
                                check=True))(x)
    # Without check a wrong pattern silently gives wrong values: that is what check is for.
    J = jax.jit(sparse_jacobian(broyden_tridiagonal_residual, sparsity=diagonal_only))(x)
    assert not np.allclose(J.todense(), _jacfwd(broyden_tridiagonal_residual)(x))



@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_check_accepts_half_precision_inputs(dtype):
    # SciPy's sparse matrices have no 16-bit floats: the check's host products must not
    # be formed in the input's dtype.
    x = _point(30).astype(dtype)
    tridiagonal = np.abs(np.subtract.outer(np.arange(30), np.arange(30))) <= 1
    J = sparse_jacobian(broyden_tridiagonal_residual, sparsity=tridiagonal, check=True)(x)
    assert J.data.dtype == dtype
    np.testing.assert_allclose(np.asarray(J.todense(), np.float64),
                               np.asarray(_jacfwd(broyden_tridiagonal_residual)(x), np.float64))


def test_hessian_check_catches_a_pattern_missing_a_nonzero():
    def f(x):  # tridiagonal Hessian
        return jnp.sum(x[:-1] * x[1:] ** 2) + jnp.sum(x ** 4)

    x = _point(12)
    with pytest.raises(ValueError, match=r"misses nonzeros.*\(0, 1\)"):
        sparse_hessian(f, sparsity=np.eye(12, dtype=bool), check=True)(x)
    tridiagonal = np.abs(np.subtract.outer(np.arange(12), np.arange(12))) <= 1
    H = sparse_hessian(f, sparsity=tridiagonal, check=True)(x)
    np.testing.assert_allclose(H.todense(), jax.hessian(f)(x), rtol=1e-12, atol=1e-12)

def _chain(x):
    return jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum(jnp.cos(x) * x[::-1])


@pytest.mark.parametrize("f", [_chain, lambda x: jnp.sum(brusselator_residual(x) ** 2)],
                         ids=["chain", "brusselator"])
def test_hessian_equals_jax_hessian(f):
    n = 40 if f is _chain else 2 * 5 * 5
    x = _point(n)
    hess = sparse_hessian(f)
    H = jax.jit(hess)(x)
    np.testing.assert_allclose(H.todense(), jax.jit(jax.hessian(f))(x), rtol=1e-10,
                               atol=1e-10)
    plan = hess.plan(x)
    assert plan.num_colors < n


def test_hessian_under_vmap_and_with_a_pattern():
    X = jnp.stack([_point(40, s) for s in range(2)])
    pattern = sparse_hessian(_chain).plan(X[0]).pattern
    Hb = jax.jit(jax.vmap(sparse_hessian(_chain, sparsity=pattern, check=True)))(X)
    np.testing.assert_allclose(Hb.todense(), jax.jit(jax.vmap(jax.hessian(_chain)))(X),
                               atol=1e-10)
    with pytest.raises(ValueError, match="scalar"):
        sparse_hessian(brusselator_residual)(brusselator_start(3))


def test_jacobian_and_hessian_take_sparsity_and_agree_with_jax():
    def f(x):
        return jnp.concatenate([x[1:] - x[:-1] ** 2, jnp.sin(x[:1])])

    def g(x):
        return jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum(jnp.cos(x))

    x = jnp.linspace(0.3, 1.7, 9)
    J = jacopt.jacobian(f, sparsity="auto")(x)
    H = jacopt.hessian(g, sparsity="auto")(x)
    np.testing.assert_allclose(J.todense(), jax.jacfwd(f)(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(H.todense(), jax.hessian(g)(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="as_matrix"):
        jacopt.jacobian(f, sparsity="auto", as_matrix=True)
    with pytest.raises(ValueError, match="chunk_size"):
        jacopt.hessian(g, sparsity="auto", chunk_size=2)
