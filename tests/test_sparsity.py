"""jacobian_sparsity against the nonzeros of dense Jacobians (jax.jacfwd at random points).

Every case checks that the pattern never misses a nonzero (a superset of the union of the dense
Jacobians' nonzeros over several random points); cases marked exact also check equality (the
union over random points hits every structural nonzero of those functions).
"""
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from jax import lax

from jacopt.sparsity import jacobian_sparsity

C = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])  # a constant with zeros
IDX = np.array([4, 0, 4, 2])


def _dense_union(f, x, points=4, argnums=0):
    """The union of the nonzeros of the dense Jacobian of ravel(f) at random points
    (jax.jacfwd, or jax.jacrev where forward mode is not defined)."""
    flat, unravel = jax.flatten_util.ravel_pytree(x)

    def g(v):
        return jax.flatten_util.ravel_pytree(f(unravel(v)))[0]

    union = None
    for seed in range(points):
        v = jax.random.normal(jax.random.key(seed), flat.shape, flat.dtype) + 0.1 * seed
        try:
            jac = jax.jacfwd(g)(v)
        except TypeError:  # custom_vjp functions: reverse mode only
            jac = jax.jacrev(g)(v)
        nz = np.asarray(jac) != 0
        union = nz if union is None else union | nz
    return union


def _scan_cumsum(x):
    def body(c, xi):
        c = c * 0.5 + xi
        return c, c * xi
    c, ys = lax.scan(body, 0.0, x)
    return jnp.concatenate([ys, c[None]])


def _while_shift(x):
    def body(state):
        i, v = state
        return i + 1, v + 0.1 * jnp.roll(v, 1) ** 2
    return lax.while_loop(lambda s: s[0] < 3, body, (0, x))[1]


def _fori_prefix(x):
    return lax.fori_loop(0, 3, lambda i, v: v.at[1:].add(jnp.sin(v[:-1])), x)


@jax.custom_jvp
def _cube(x):
    return x ** 3


_cube.defjvp(lambda primals, tangents: (_cube(primals[0]), 3 * primals[0] ** 2 * tangents[0]))


@jax.custom_vjp
def _square(x):
    return x * x


_square.defvjp(lambda x: (x * x, x), lambda x, g: (2 * x * g,))


def _conv1d(x):
    kernel = jnp.array([[[1.0, 2.0, 3.0]]])  # (O=1, I=1, K=3)
    return lax.conv_general_dilated(x[None, None, :], kernel, (1,), [(1, 1)])[0, 0]


def _conv2d(x):
    img = x.reshape(1, 2, 3, 3)
    kernel = jnp.ones((2, 2, 2, 2))
    return lax.conv_general_dilated(img, kernel, (1, 1), "VALID")


# (name, f, x, exact)
CASES = [
    ("unary", lambda x: jnp.exp(jnp.sin(x)) + jnp.tanh(x) * jnp.log1p(x ** 2), (6,), True),
    ("binary_broadcast", lambda x: x[:, None] * x[None, :3] + 1.0, (4,), True),
    ("scalar_literal", lambda x: 3.0 * x - x / 2.0, (5,), True),
    ("convert", lambda x: x.astype(jnp.float32).astype(jnp.float64) * 2, (5,), True),
    ("reshape_transpose", lambda x: (x.reshape(2, 3).T ** 2).reshape(-1), (6,), True),
    ("broadcast_in_dim", lambda x: jnp.broadcast_to(x[:, None], (3, 4)) * jnp.arange(4.0),
     (3,), True),
    ("squeeze_expand", lambda x: jnp.squeeze(jnp.expand_dims(x, 0) ** 2, 0), (4,), True),
    ("slice_rev", lambda x: x[1:5:2] * x[::-1][:2], (6,), True),
    ("roll_concat", lambda x: jnp.concatenate([jnp.roll(x, 2), x[:2] ** 2]), (5,), True),
    ("pad", lambda x: jnp.pad(x ** 2, (2, 1)), (4,), True),
    ("pad_interior", lambda x: lax.pad(x, 0.0, [(1, 1, 1)]), (3,), True),
    ("split", lambda x: jnp.split(x, 2)[1] * jnp.split(x, 2)[0], (6,), True),
    ("gather_static", lambda x: x[IDX] * x[jnp.array([1, 1, 3, 0])], (5,), True),
    ("gather_2d", lambda x: x.reshape(3, 3)[jnp.array([2, 0]), 1:], (9,), True),
    ("gather_traced", lambda x: x[jnp.argmax(x)] * x[:2], (5,), False),
    ("take_along", lambda x: jnp.take_along_axis(x.reshape(2, 3), jnp.array([[2], [0]]), 1),
     (6,), True),
    ("dynamic_slice_static", lambda x: lax.dynamic_slice(x, (2,), (3,)), (6,), True),
    ("dynamic_slice_traced",
     lambda x: lax.dynamic_slice(x, (jnp.argmin(x),), (2,)), (5,), False),
    ("dynamic_update_static", lambda x: lax.dynamic_update_slice(x, x[:2] ** 2, (3,)),
     (6,), True),
    ("dynamic_update_traced",
     lambda x: lax.dynamic_update_slice(x, x[:2] ** 2, (jnp.argmax(x),)), (6,), False),
    ("scatter_set", lambda x: x.at[jnp.array([0, 3])].set(x[4:6] ** 2), (6,), True),
    ("scatter_add", lambda x: x.at[jnp.array([0, 3, 0])].add(x[:3] ** 2), (6,), True),
    ("scatter_add_traced",
     lambda x: x.at[jnp.argmax(x)].add(x[0] * x[1]), (4,), False),
    ("segment_sum", lambda x: jax.ops.segment_sum(x, jnp.array([0, 0, 1, 2, 2, 2]), 3),
     (6,), True),
    ("dot_vector", lambda x: x.reshape(2, 3) @ jnp.array([1.0, 2.0, 3.0]), (6,), True),
    ("dot_matrix", lambda x: x.reshape(2, 3) @ x.reshape(3, 2), (6,), True),
    ("dot_const_zeros", lambda x: C @ x, (3,), True),
    ("dot_const_left", lambda x: x[:2] @ C, (3,), True),
    ("dot_batched", lambda x: jnp.einsum("bij,bj->bi", x.reshape(2, 2, 2), x[:4].reshape(2, 2)),
     (8,), True),
    ("mul_const_zeros", lambda x: x * jnp.array([1.0, 0.0, 2.0, 0.0]), (4,), True),
    ("reduce_sum", lambda x: x.reshape(2, 3).sum(axis=1), (6,), True),
    ("reduce_max", lambda x: x.reshape(3, 2).max(axis=0), (6,), False),
    ("reduce_min_prod", lambda x: jnp.stack([x.min(), jnp.prod(x[:3])]), (5,), False),
    ("argmax_only", lambda x: jnp.argmax(x).astype(float) * jnp.ones(2), (4,), True),
    ("cumsum", lambda x: jnp.cumsum(x.reshape(2, 3), axis=1).reshape(-1), (6,), True),
    ("cumsum_reverse", lambda x: lax.cumsum(x, reverse=True), (4,), True),
    ("cumprod_cummax", lambda x: jnp.concatenate([jnp.cumprod(x), lax.cummax(x)]), (4,),
     False),
    ("where_traced", lambda x: jnp.where(x > 0, x ** 2, x[::-1]), (5,), False),
    ("where_static", lambda x: jnp.where(jnp.arange(5) > 2, x, 0.0), (5,), True),
    ("clamp", lambda x: jnp.clip(x, -0.5, 0.5) + x[0], (4,), False),
    ("iota_const", lambda x: x + jnp.arange(4.0) + jnp.ones(4), (4,), True),
    ("integer_ops", lambda x: (x > 0).astype(float) + jnp.floor(x) + x, (4,), True),
    ("stop_gradient", lambda x: lax.stop_gradient(x) * x[0], (3,), True),
    ("jit_inner", lambda x: jax.jit(lambda y: jnp.sin(y[::-1]))(x), (4,), True),
    ("custom_jvp", lambda x: _cube(x[::-1]) + x, (4,), True),
    ("custom_vjp", lambda x: _square(x[:3]) * x[1:], (4,), True),
    ("relu_checkpoint", lambda x: jax.checkpoint(lambda y: jax.nn.relu(y) * y[0])(x), (4,),
     False),
    ("cond", lambda x: lax.cond(x[0] > 0, lambda y: y * y[1], lambda y: y[::-1], x), (3,),
     False),
    ("switch_static", lambda x: lax.switch(1, [lambda y: y, lambda y: y[::-1] ** 2], x), (3,),
     True),
    ("scan", _scan_cumsum, (4,), True),
    ("while", _while_shift, (5,), False),  # fixed point: any number of steps
    ("fori", _fori_prefix, (5,), True),
    ("conv1d", _conv1d, (6,), True),
    ("conv2d", _conv2d, (18,), True),
    ("optimization_barrier", lambda x: lax.optimization_barrier((x[::-1], x))[0] * x, (4,),
     True),
    ("scan_length_0", lambda x: lax.scan(lambda c, _: (c[::-1], c), x, None, length=0)[0],
     (3,), True),
    ("sort_fallback", lambda x: jnp.sort(x[:3]) * 2 + x[3], (5,), False),
    ("pytree_out", lambda x: {"a": x[:2] ** 2, "b": (x[2] * x[3], x[::-1])}, (4,), True),
]


@pytest.mark.parametrize("name,f,shape,exact", CASES, ids=[c[0] for c in CASES])
def test_pattern_never_misses_and_is_exact_where_expected(name, f, shape, exact):
    x = jnp.ones(shape)
    pattern = jacobian_sparsity(f, x)
    assert isinstance(pattern, sp.csr_array) and pattern.dtype == bool
    dense = _dense_union(f, x)
    assert pattern.shape == dense.shape
    got = pattern.toarray()
    missed = dense & ~got
    assert not missed.any(), f"{name}: misses nonzeros at {np.argwhere(missed)[:5]}"
    if exact:
        np.testing.assert_array_equal(got, dense, err_msg=name)


def test_conservative_fallback_for_unhandled_primitive():
    # sort has no rule: every output depends on every input of its operands (a superset).
    pattern = jacobian_sparsity(lambda x: jnp.sort(x[:3]), jnp.ones(5)).toarray()
    assert pattern[:, :3].all() and not pattern[:, 3:].any()


def test_pytree_input_and_argnums():
    def f(params, data):
        return params["w"] * data[0] + params["b"][0]

    params = {"b": jnp.ones(1), "w": jnp.ones(3)}
    data = jnp.ones(3)
    pattern = jacobian_sparsity(f, params, data).toarray()
    # ravel order: b (1) then w (3)
    expected = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]], bool)
    np.testing.assert_array_equal(pattern, expected)
    wrt_data = jacobian_sparsity(f, params, data, argnums=1).toarray()
    np.testing.assert_array_equal(wrt_data, np.array([[1, 0, 0]] * 3, bool))
    both = jacobian_sparsity(f, params, data, argnums=(0, 1))
    assert both.shape == (3, 7)
    with pytest.raises(ValueError, match="argnums"):
        jacobian_sparsity(f, params, data, argnums=2)


def test_long_scan_fixed_point_is_a_superset():
    def f(x):
        def body(c, xi):
            return c + xi, c * xi
        return lax.scan(body, 0.0, x)[1]

    x = jnp.ones(300)  # longer than the exact-unroll limit
    got = jacobian_sparsity(f, x).toarray()
    dense = _dense_union(f, x, points=2)
    assert not (dense & ~got).any()


def test_brusselator_pattern_is_exact():
    from jacopt.problems.brusselator import brusselator_residual, brusselator_start

    x0 = brusselator_start(8)
    pattern = jacobian_sparsity(brusselator_residual, x0).toarray()
    dense = _dense_union(brusselator_residual, x0, points=2)
    np.testing.assert_array_equal(pattern, dense)
    assert pattern.sum(axis=1).max() == 6
