"""jacopt.batch_jacobian and jacopt.elementwise_grad: values against per-sample Jacobians and
analytic derivatives, and the check=True probe raising when rows (elements) interact."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt

MODES = ["auto", "fwd", "rev"]


# --- batch_jacobian -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_seed_000_row_derivative_of_x_w_transpose_is_w(mode):
    """Theano's DisconnectedInputError case: d (X @ W.T)[i] / d X[i] = W for every row i."""
    W = jax.random.normal(jax.random.PRNGKey(0), (3, 5))
    X = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    J = jacopt.batch_jacobian(lambda X: X @ W.T, mode=mode, check=True)(X)
    assert J.shape == (8, 3, 5)
    for i in range(8):
        np.testing.assert_array_equal(J[i], W)


def per_sample_mlp(X, params):
    """A 2-layer tanh MLP applied row by row to X[B, 4] -> [B, 2, 3]."""
    (W1, b1), (W2, b2) = params
    return (jnp.tanh(X @ W1.T + b1) @ W2.T + b2).reshape(X.shape[0], 2, 3)


@pytest.fixture
def mlp():
    k = jax.random.split(jax.random.PRNGKey(2), 5)
    params = ((jax.random.normal(k[0], (7, 4)), jax.random.normal(k[1], (7,))),
              (jax.random.normal(k[2], (6, 7)), jax.random.normal(k[3], (6,))))
    return params, jax.random.normal(k[4], (5, 4))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunk", [None, 4])
def test_batch_jacobian_equals_per_sample_jacobians(mlp, mode, chunk):
    params, X = mlp
    J = jacopt.batch_jacobian(per_sample_mlp, mode=mode, chunk_size=chunk)(X, params)
    assert J.shape == (5, 2, 3, 4)
    (W1, b1), (W2, _) = params
    for i in range(5):
        h = np.tanh(np.asarray(W1) @ np.asarray(X[i]) + np.asarray(b1))
        expected = (np.asarray(W2) @ np.diag(1 - h**2) @ np.asarray(W1)).reshape(2, 3, 4)
        np.testing.assert_allclose(J[i], expected, rtol=1e-12, atol=1e-13)
        single = jacopt.jacobian(lambda x: per_sample_mlp(x[None], params)[0])(X[i])
        np.testing.assert_allclose(J[i], single, rtol=1e-13, atol=1e-14)


def test_batch_jacobian_pytree_input_and_output():
    f = lambda t: {"y": t["u"] * t["v"][:, :1], "z": jnp.sum(t["u"] ** 2, axis=1)}
    X = {"u": jnp.arange(6.0).reshape(3, 2), "v": jnp.ones((3, 1)) * 2.0}
    J = jacopt.batch_jacobian(f, check=True)(X)
    assert J["y"]["u"].shape == (3, 2, 2) and J["y"]["v"].shape == (3, 2, 1)
    assert J["z"]["u"].shape == (3, 2)
    np.testing.assert_array_equal(J["y"]["u"][1], 2.0 * np.eye(2))
    np.testing.assert_array_equal(J["y"]["v"][1], np.asarray(X["u"][1])[:, None])
    np.testing.assert_array_equal(J["z"]["u"], 2 * np.asarray(X["u"]))


def test_batch_jacobian_works_under_jit_and_float32(mlp):
    params, X = mlp
    params32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    J32 = jax.jit(jacopt.batch_jacobian(per_sample_mlp))(X.astype(jnp.float32), params32)
    assert J32.dtype == jnp.float32
    J64 = jacopt.batch_jacobian(per_sample_mlp)(X, params)
    np.testing.assert_allclose(J32, J64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name, f",
    [
        ("batch mean", lambda X: X - X.mean(axis=0)),
        ("softmax over the batch axis", lambda X: jax.nn.softmax(X, axis=0)),
        ("roll", lambda X: jnp.roll(X, 1, axis=0) * X),
        ("one weak pair", lambda X: X.at[0].add(1e-3 * X[3, ::-1])),
        ("batch norm", lambda X: (X - X.mean(0)) / X.std(0)),
    ],
)
def test_batch_jacobian_check_raises_when_rows_interact(name, f):
    X = jax.random.normal(jax.random.PRNGKey(3), (6, 3))
    with pytest.raises(ValueError, match="rows of f interact"):
        jacopt.batch_jacobian(f, check=True)(X)
    jacopt.batch_jacobian(f, check=False)(X)  # without the check it silently assumes


def test_batch_jacobian_check_passes_on_independent_rows_in_float32():
    X = jax.random.normal(jax.random.PRNGKey(4), (64, 10), jnp.float32)
    W = jax.random.normal(jax.random.PRNGKey(5), (10, 10), jnp.float32)
    f = lambda X: jax.nn.log_softmax(jnp.tanh(X @ W) @ W, axis=1)
    J = jacopt.batch_jacobian(f, check=True)(X)
    assert J.shape == (64, 10, 10)


def test_batch_jacobian_bad_input():
    f = lambda X: X * 2
    with pytest.raises(TypeError, match=r"argument 0 \(x, the batch\).*integer"):
        jacopt.batch_jacobian(f)(jnp.ones((3, 2), jnp.int32))
    with pytest.raises(ValueError, match="leading batch axis"):
        jacopt.batch_jacobian(f)(jnp.array(1.0))
    with pytest.raises(ValueError, match="different leading"):
        jacopt.batch_jacobian(lambda t: t[0])((jnp.ones((3, 2)), jnp.ones((4, 2))))
    with pytest.raises(ValueError, match="maps a batch of 3 rows to 1"):
        jacopt.batch_jacobian(lambda X: X.sum(0, keepdims=True))(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(jacopt.batch_jacobian(f, check=True))(jnp.ones((3, 2)))


# --- elementwise_grad -----------------------------------------------------------------------------
def test_seed_001_elementwise_derivative_matches_analytic_and_jacobian_diagonal():
    f = lambda x: jnp.sin(x) * jnp.exp(-x**2)
    x = jnp.linspace(-2.0, 2.0, 20_001)  # n > 10,000, never an n x n matrix
    d = jacopt.elementwise_grad(f, check=True)(x)
    x_np = np.asarray(x)
    analytic = (np.cos(x_np) - 2 * x_np * np.sin(x_np)) * np.exp(-x_np**2)
    np.testing.assert_allclose(d, analytic, rtol=1e-13, atol=1e-15)
    small = x[::2000]
    np.testing.assert_allclose(jacopt.elementwise_grad(f)(small),
                               np.diag(jacopt.jacobian(f)(small)), rtol=1e-15)


def test_elementwise_grad_pytree_extra_args_jit_and_float32():
    f = lambda t, c: {"a": c * t["a"] ** 3, "b": jnp.log(t["b"])}
    t = {"a": jnp.array([[1.0, 2.0]], jnp.float32), "b": jnp.array([0.5, 4.0], jnp.float32)}
    d = jax.jit(jacopt.elementwise_grad(f))(t, 2.0)
    assert d["a"].dtype == jnp.float32
    np.testing.assert_allclose(d["a"], [[6.0, 24.0]], rtol=1e-6)
    np.testing.assert_allclose(d["b"], [2.0, 0.25], rtol=1e-6)


@pytest.mark.parametrize(
    "name, f",
    [
        ("cumsum", jnp.cumsum),
        ("global scale", lambda x: x * jnp.sum(x)),
        ("neighbour", lambda x: x + 1e-3 * jnp.roll(x, 1)),
        ("sort", jnp.sort),
    ],
)
def test_elementwise_grad_check_raises_when_not_elementwise(name, f):
    x = jax.random.normal(jax.random.PRNGKey(6), (50,))
    with pytest.raises(ValueError, match="not elementwise"):
        jacopt.elementwise_grad(f, check=True)(x)


def test_elementwise_grad_rejects_shape_change_and_bad_input():
    with pytest.raises(ValueError, match="same structure and shapes"):
        jacopt.elementwise_grad(jnp.sum)(jnp.ones(3))
    with pytest.raises(TypeError, match="argument 0 \\(x\\).*integer"):
        jacopt.elementwise_grad(jnp.sin)(jnp.arange(3))
    with pytest.raises(ValueError, match="empty"):
        jacopt.elementwise_grad(jnp.sin)(jnp.ones(0))


def test_checks_compare_each_element_at_its_own_scale():
    """A large derivative somewhere must not hide a coupling elsewhere: with derivatives from
    exp(-1) to exp(10), a neighbour coupling of 1 is caught (it was within the old tolerance,
    scaled by the largest value anywhere); float32, as JAX runs by default."""
    x = jnp.linspace(-1.0, 10.0, 1000, dtype=jnp.float32)
    with pytest.raises(ValueError, match="not elementwise"):
        jacopt.elementwise_grad(lambda v: jnp.exp(v) + jnp.roll(v, 1), check=True)(x)
    with pytest.raises(ValueError, match="rows of f interact"):
        jacopt.batch_jacobian(lambda X: jnp.exp(X) + jnp.roll(X, 1, 0), check=True)(
            x.reshape(500, 2))
    d = jacopt.elementwise_grad(jnp.exp, check=True)(x)  # elementwise: still no false alarm
    np.testing.assert_allclose(d, jnp.exp(x), rtol=1e-6)


def test_checks_skip_infinite_derivatives_but_still_see_the_rest():
    x = jnp.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # d sqrt / dx is inf at 0
    with pytest.raises(ValueError, match="not elementwise"):
        jacopt.elementwise_grad(lambda v: jnp.sqrt(v) + jnp.roll(v, 1), check=True)(x)
    with pytest.raises(ValueError, match="rows of f interact"):
        jacopt.batch_jacobian(lambda X: jnp.sqrt(X) + jnp.roll(X, 1, 0), check=True)(
            x.reshape(3, 2))
    d = jacopt.elementwise_grad(jnp.sqrt, check=True)(x)  # elementwise: inf, no alarm
    assert np.isinf(d[0]) and np.allclose(d[1:], 0.5 / np.sqrt(x[1:]))
    with pytest.warns(UserWarning, match="could not check anything"):
        jacopt.elementwise_grad(jnp.sqrt, check=True)(-jnp.ones(4))  # every derivative NaN


def test_batch_jacobian_check_takes_bfloat16():
    X = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2).astype(jnp.bfloat16)
    J = jacopt.batch_jacobian(jnp.sin, check=True)(X)
    assert J.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(J, np.float32)[:, [0, 1], [0, 1]],
                               np.cos(np.asarray(X, np.float32)), atol=1e-2)


def test_elementwise_grad_refuses_outputs_that_cannot_be_differentiated():
    with pytest.raises(TypeError, match="elementwise_grad: output leaf <root> has dtype int32"):
        jacopt.elementwise_grad(lambda v: (v > 0).astype(jnp.int32))(jnp.ones(3))
    with pytest.raises(TypeError, match="complex64"):
        jacopt.elementwise_grad(lambda v: v * 1j)(jnp.ones(3, jnp.float32))


def test_keyword_arguments_reach_f_undifferentiated_as_in_jax():
    x = jnp.array([0.3, -1.2, 2.0])
    f = lambda v, s=1.0: s * jnp.sin(v) * v[0]
    np.testing.assert_allclose(jacopt.jacobian(f)(x, s=2.0), jax.jacfwd(f)(x, s=2.0))
    g = lambda v, s=1.0: s * jnp.sum(jnp.sin(v) * v[0])
    np.testing.assert_allclose(jacopt.hessian(g)(x, s=3.0), jax.hessian(g)(x, s=3.0))
    np.testing.assert_allclose(
        jacopt.elementwise_grad(lambda v, s=1.0: s * jnp.sin(v))(x, s=2.0), 2.0 * jnp.cos(x))
    np.testing.assert_allclose(
        jacopt.batch_jacobian(lambda X, s=1.0: s * jnp.sin(X))(x[:, None], s=2.0)[:, 0, 0],
        2.0 * jnp.cos(x))
