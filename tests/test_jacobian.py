"""jacopt.jacobian and jacopt.hessian against independent values: hand-derived Jacobians
(W x, log-softmax, a tanh MLP), central finite differences in float64, and forward vs reverse."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import jacopt
from jacopt._finite_differences import central_difference_jacobian
from jacopt.jacobian import auto_mode

MODES = ["auto", "fwd", "rev"]


def tanh_mlp(params, x):
    """[layers] tanh MLP: tanh on hidden layers, linear last layer. params = [(W, b), ...]."""
    h = x
    for W, b in params[:-1]:
        h = jnp.tanh(W @ h + b)
    W, b = params[-1]
    return W @ h + b


def random_mlp(key, sizes, dtype=jnp.float64):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, kw, kb = jax.random.split(key, 3)
        params.append((jax.random.normal(kw, (n_out, n_in), dtype) / np.sqrt(n_in),
                       0.1 * jax.random.normal(kb, (n_out,), dtype)))
    return params


# --- seed 003 (Chainer): the Jacobian of W @ x is W, not the column sum -----------------------
@pytest.mark.parametrize("mode", MODES)
def test_seed_003_jacobian_of_linear_map_is_the_matrix(mode):
    W = jax.random.normal(jax.random.PRNGKey(3), (4, 6))
    x = jnp.linspace(-1.0, 1.0, 6)
    J = jacopt.jacobian(lambda x: W @ x, mode=mode)(x)
    np.testing.assert_array_equal(J, W)  # pushing e_j through a linear map is exact
    assert J.shape == (4, 6)


# --- mode="auto" ------------------------------------------------------------------------------
def test_auto_mode_rule():
    assert auto_mode(3, 5) == "fwd"
    assert auto_mode(5, 5) == "fwd"  # ties go forward
    assert auto_mode(6, 5) == "rev"
    assert auto_mode(1, 1) == "fwd"


def _reverse_only(x):
    """Identity with a custom VJP: reverse mode works, forward mode raises TypeError."""
    @jax.custom_vjp
    def ident(v):
        return v

    ident.defvjp(lambda v: (v, None), lambda _, g: (g,))
    return ident(x)


def test_auto_uses_reverse_mode_on_wide_functions():
    """n = 6 > m = 2: auto must run VJPs, which the reverse-only function supports."""
    A = jax.random.normal(jax.random.PRNGKey(0), (2, 6))
    f = lambda x: A @ _reverse_only(x)
    x = jnp.ones(6)
    np.testing.assert_array_equal(jacopt.jacobian(f)(x), A)
    with pytest.raises(TypeError):
        jacopt.jacobian(f, mode="fwd")(x)


def test_auto_uses_forward_mode_on_tall_functions(monkeypatch):
    """n = 2 <= m = 6: auto runs JVPs first (a spy records the modes tried); the reverse-only
    function has none, so auto then falls back to VJPs and still gives the Jacobian."""
    module = sys.modules["jacopt.jacobian"]
    tried, original = [], module._flat_jacobian

    def spy(g, x, mode, *rest):
        tried.append(mode)
        return original(g, x, mode, *rest)

    monkeypatch.setattr(module, "_flat_jacobian", spy)
    A = jax.random.normal(jax.random.PRNGKey(0), (6, 2))
    x = jnp.ones(2)
    np.testing.assert_array_equal(jacopt.jacobian(lambda x: A @ x)(x), A)
    assert tried == ["fwd"]
    tried.clear()
    np.testing.assert_array_equal(jacopt.jacobian(lambda x: A @ _reverse_only(x))(x), A)
    assert tried == ["fwd", "rev"]


def test_auto_mode_falls_back_to_reverse_for_custom_vjp():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (jnp.cos(x) * g,))
    x = jnp.array([0.1, 0.7, -2.0])  # n = m: auto would pick forward mode
    np.testing.assert_allclose(jacopt.jacobian(f)(x), jnp.diag(jnp.cos(x)))
    with pytest.raises(TypeError, match="custom_vjp"):  # an explicit choice is respected
        jacopt.jacobian(f, mode="fwd")(x)


# --- analytic: tanh MLP -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_tanh_mlp_input_jacobian_matches_hand_derivation(mode):
    """y = W2 tanh(W1 x + b1) + b2  =>  dy/dx = W2 diag(1 - h^2) W1 with h = tanh(W1 x + b1)."""
    params = random_mlp(jax.random.PRNGKey(1), [5, 7, 3])
    (W1, b1), (W2, _) = params
    x = jnp.linspace(-1.0, 2.0, 5)
    h = np.tanh(np.asarray(W1) @ np.asarray(x) + np.asarray(b1))
    expected = np.asarray(W2) @ np.diag(1 - h**2) @ np.asarray(W1)
    J = jacopt.jacobian(lambda x: tanh_mlp(params, x), mode=mode)(x)
    np.testing.assert_allclose(J, expected, rtol=1e-13, atol=1e-14)


# --- seed 002 (TensorFlow): log-softmax policy ----------------------------------------------
def log_policy(X, s):
    return jax.nn.log_softmax(X @ s)


@pytest.fixture
def policy():
    X = jnp.array([[0.3, -1.2, 0.5, 2.0], [-0.7, 0.1, 1.4, -0.3]])
    s = jnp.array([0.5, -1.0, 2.0, 0.25])
    pi = np.asarray(jax.nn.softmax(X @ s))
    return X, s, pi


@pytest.mark.parametrize("mode", MODES)
def test_seed_002_log_softmax_jacobian_is_e_a_minus_pi_outer_s(policy, mode):
    X, s, pi = policy
    J = jacopt.jacobian(log_policy, mode=mode)(X, s)  # (2 actions, 2, 4)
    assert J.shape == (2, 2, 4)
    for a in range(2):
        expected = np.outer(np.eye(2)[a] - pi, s)
        np.testing.assert_allclose(J[a], expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("action", [0, 1])
def test_seed_002_log_softmax_hessian_formula_and_nesting(policy, action):
    """Hessian of log pi_a wrt X flattened row-major: -(diag(pi) - pi pi^T) kron s s^T, and
    jacobian(jacobian(.)) (the hand-written-loop failure in TensorFlow) gives the same."""
    X, s, pi = policy
    s_np = np.asarray(s)
    expected = -np.kron(np.diag(pi) - np.outer(pi, pi), np.outer(s_np, s_np))
    log_pi_a = lambda X: log_policy(X, s)[action]
    H = jacopt.hessian(log_pi_a, as_matrix=True)(X)
    np.testing.assert_allclose(H, expected, rtol=1e-12, atol=1e-14)
    nested = jacopt.jacobian(jacopt.jacobian(log_pi_a))(X)  # (2, 4, 2, 4)
    np.testing.assert_allclose(nested.reshape(8, 8), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jacopt.hessian(log_pi_a)(X), nested, rtol=1e-14, atol=1e-15)


# --- nesting ----------------------------------------------------------------------------------
def test_nested_jacobians_equal_hessian_and_third_derivative():
    """f = (a.x)^3: H = 6 (a.x) a a^T, third derivative T = 6 a (x) a (x) a."""
    a = jnp.array([0.5, -1.0, 2.0])
    x = jnp.array([0.3, 0.2, -0.1])
    f = lambda x: jnp.dot(a, x) ** 3
    t = float(jnp.dot(a, x))
    a_np = np.asarray(a)
    H = jacopt.hessian(f)(x)
    np.testing.assert_allclose(H, 6 * t * np.outer(a_np, a_np), rtol=1e-13)
    np.testing.assert_allclose(jacopt.jacobian(jacopt.jacobian(f))(x), H, rtol=1e-14)
    T = jacopt.jacobian(jacopt.jacobian(jacopt.jacobian(f)))(x)
    np.testing.assert_allclose(T, 6 * np.einsum("i,j,k->ijk", a_np, a_np, a_np), rtol=1e-13)


def test_hessian_of_quadratic_is_the_matrix_for_pytrees_and_argnums():
    A = jnp.array([[2.0, 0.5, 0.0], [0.5, 3.0, -1.0], [0.0, -1.0, 4.0]])
    f = lambda u, v: 0.5 * jnp.concatenate([u, v]) @ A @ jnp.concatenate([u, v])
    u, v = jnp.array([1.0, 2.0]), jnp.array([-1.0])
    H = jacopt.hessian(f, argnums=(0, 1), as_matrix=True)(u, v)
    np.testing.assert_allclose(H, A, rtol=1e-15)
    tree = jacopt.hessian(f, argnums=(0, 1))(u, v)
    reference = jax.hessian(f, argnums=(0, 1))(u, v)
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(reference)
    np.testing.assert_allclose(tree[0][1], A[:2, 2:], rtol=1e-15)


def test_hessian_rejects_non_scalar_function():
    with pytest.raises(ValueError, match="scalar"):
        jacopt.hessian(jnp.sin)(jnp.ones(3))


# --- pytrees, argnums, as_matrix ----------------------------------------------------------------
def pytree_function(tree, scale):
    return {
        "sum": jnp.sin(tree["a"]).sum(axis=0) * tree["b"][0] ** 2,
        "prod": (tree["b"][1] * scale * tree["a"][0], jnp.exp(tree["b"][0]).sum()),
    }


@pytest.fixture
def tree_point():
    return {"a": jnp.array([[0.1, 0.2], [0.3, -0.4], [1.0, 0.5]]),
            "b": [jnp.array([0.7, -0.2]), jnp.array(1.5)]}


@pytest.mark.parametrize("mode", MODES)
def test_pytree_jacobian_has_jacfwd_structure_and_finite_difference_values(tree_point, mode):
    J = jacopt.jacobian(pytree_function, mode=mode)(tree_point, 2.0)
    reference = jax.jacfwd(pytree_function)(tree_point, 2.0)
    assert jax.tree_util.tree_structure(J) == jax.tree_util.tree_structure(reference)
    for got, want in zip(jax.tree_util.tree_leaves(J), jax.tree_util.tree_leaves(reference)):
        assert got.shape == want.shape
    matrix = jacopt.jacobian(pytree_function, mode=mode, as_matrix=True)(tree_point, 2.0)
    fd = central_difference_jacobian(lambda t: pytree_function(t, 2.0), tree_point)
    assert matrix.shape == fd.shape == (5, 9)
    np.testing.assert_allclose(matrix, fd, rtol=1e-8, atol=1e-9)
    # the tree form and the matrix form hold the same numbers in ravel_pytree order
    out_index = jacopt.TreeIndex(pytree_function(tree_point, 2.0))
    in_index = jacopt.TreeIndex(tree_point)
    row = out_index.index(("prod", 0, 1))
    col = in_index.index(("a", 0, 1))
    np.testing.assert_array_equal(matrix[row, col], J["prod"][0]["a"][1, 0, 1])


def test_tuple_argnums_gives_tuple_of_blocks_and_concatenated_columns():
    f = lambda x, c, y: jnp.stack([x[0] * y[1], x[1] + c * y[0] ** 2, jnp.sin(x[0] * y[0])])
    x, y = jnp.array([0.4, -0.3]), jnp.array([1.2, 0.8])
    J = jacopt.jacobian(f, argnums=(0, 2))(x, 3.0, y)
    assert isinstance(J, tuple) and J[0].shape == (3, 2) and J[1].shape == (3, 2)
    matrix = jacopt.jacobian(f, argnums=(0, 2), as_matrix=True)(x, 3.0, y)
    fd = central_difference_jacobian(lambda xy: f(xy[0], 3.0, xy[1]), (x, y))
    np.testing.assert_allclose(matrix, fd, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(matrix, jnp.concatenate(J, axis=1))
    # negative argnums count from the end, as in Python indexing
    np.testing.assert_array_equal(jacopt.jacobian(f, argnums=-1)(x, 3.0, y), J[1])


def test_has_aux_returns_jacobian_and_aux():
    f = lambda x: (jnp.sin(x) * 2, {"norm": jnp.linalg.norm(x)})
    x = jnp.array([0.1, 0.2, 0.3])
    for mode in ("fwd", "rev"):
        J, aux = jacopt.jacobian(f, mode=mode, has_aux=True)(x)
        np.testing.assert_allclose(J, np.diag(2 * np.cos(np.asarray(x))), rtol=1e-15)
        np.testing.assert_allclose(aux["norm"], np.linalg.norm(np.asarray(x)))


def test_python_float_leaves_are_converted_and_scalar_inputs_work():
    J = jacopt.jacobian(lambda t: jnp.stack([t[0] * t[1], t[1] ** 2]))([2.0, 3.0])
    np.testing.assert_allclose(jnp.stack(J, axis=1), [[3.0, 2.0], [0.0, 6.0]])
    np.testing.assert_allclose(jacopt.jacobian(jnp.sin)(0.5), np.cos(0.5))


# --- finite differences on random functions (property based, few examples) ------------------------
@settings(max_examples=5, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    mode=st.sampled_from(MODES),
    chunk=st.one_of(st.none(), st.integers(1, 4)),
)
def test_random_mlps_match_central_differences(seed, sizes, mode, chunk):
    key = jax.random.PRNGKey(seed)
    params = random_mlp(key, sizes)
    x = jax.random.normal(jax.random.fold_in(key, 1), (sizes[0],))
    J = jax.jit(jacopt.jacobian(tanh_mlp, argnums=(0, 1), mode=mode, as_matrix=True,
                                chunk_size=chunk))(params, x)
    fd = central_difference_jacobian(lambda px: tanh_mlp(*px), (params, x))
    np.testing.assert_allclose(J, fd, rtol=1e-7, atol=1e-8)


def test_forward_and_reverse_agree_on_a_pytree_mlp():
    params = random_mlp(jax.random.PRNGKey(7), [4, 6, 6, 3])
    x = jnp.array([0.3, -0.1, 0.8, 0.2])
    fwd = jacopt.jacobian(tanh_mlp, mode="fwd", as_matrix=True)(params, x)
    rev = jacopt.jacobian(tanh_mlp, mode="rev", as_matrix=True)(params, x)
    np.testing.assert_allclose(fwd, rev, rtol=1e-13, atol=1e-15)


# --- chunking and the memory budget -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 40])
def test_chunked_equals_unchunked(mode, chunk):
    """Same numbers up to the ordering of sums inside XLA's batched matrix products: within a
    few ulps of the largest entry (chunk widths 3 and 7 divide neither n = 248 nor m = 8)."""
    params = random_mlp(jax.random.PRNGKey(2), [6, 16, 8])
    x = jnp.linspace(-1, 1, 6)
    f = lambda p: tanh_mlp(p, x)
    whole = jax.jit(jacopt.jacobian(f, mode=mode, as_matrix=True))(params)
    for jac in (jax.jit(jacopt.jacobian(f, mode=mode, as_matrix=True, chunk_size=chunk)),
                jacopt.jacobian(f, mode=mode, as_matrix=True, chunk_size=chunk)):  # eager too
        chunked = jac(params)
        assert chunked.shape == whole.shape == (8, 248)
        ulps = np.max(np.abs(chunked - whole)) / (np.finfo(np.float64).eps * np.max(np.abs(whole)))
        assert ulps <= 8


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_chunked_is_bit_identical_without_matrix_products(mode):
    """No contraction whose order could change with the chunk width: exact equality."""
    f = lambda x: jnp.concatenate([jnp.sin(x) * x[::-1], jnp.exp(x[:5]) ** 2])
    x = jnp.linspace(-1.0, 1.0, 11)
    whole = jax.jit(jacopt.jacobian(f, mode=mode))(x)
    for chunk in (1, 4, 10):
        np.testing.assert_array_equal(
            jax.jit(jacopt.jacobian(f, mode=mode, chunk_size=chunk))(x), whole)


def test_memory_budget_picks_the_chunk_and_keeps_the_result():
    from jacopt._basis import chunk_for_budget, memory_model

    W = jax.random.normal(jax.random.PRNGKey(0), (30, 20))
    f = lambda x: jnp.tanh(W @ x)
    x = jnp.ones(20)
    _, lin = jax.linearize(f, x)
    fixed, per_vector = memory_model(lin, x)
    # the linear map closes over W (30 x 20) and 1 - tanh^2 (30); one JVP touches at least
    # its input (20) and output (30); all float64
    assert fixed >= 2 * (30 * 20 + 30) * 8
    assert per_vector >= (20 + 30) * 8
    assert chunk_for_budget(lin, x, 20, fixed + 5 * per_vector) == 5
    assert chunk_for_budget(lin, x, 20, 10**12) == 20
    with pytest.warns(UserWarning, match="below the estimated minimum"):
        assert chunk_for_budget(lin, x, 20, fixed // 2) == 1
    whole = jax.jit(jacopt.jacobian(f, mode="fwd"))(x)
    budgeted = jax.jit(jacopt.jacobian(f, mode="fwd", max_memory_bytes=fixed + 5 * per_vector))(x)
    np.testing.assert_array_equal(budgeted, whole)


# --- jit, vmap, dtype ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_returned_function_works_under_jit_and_vmap(mode):
    W = jax.random.normal(jax.random.PRNGKey(4), (3, 2))
    f = lambda x: jnp.tanh(W @ x)
    xs = jax.random.normal(jax.random.PRNGKey(5), (4, 2))
    jac = jacopt.jacobian(f, mode=mode)
    batched = jax.jit(jax.vmap(jac))(xs)
    assert batched.shape == (4, 3, 2)
    for i in range(4):
        h = np.tanh(np.asarray(W) @ np.asarray(xs[i]))
        np.testing.assert_allclose(batched[i], np.diag(1 - h**2) @ np.asarray(W), rtol=1e-13)


@pytest.mark.parametrize("mode", MODES)
def test_float32_in_float32_out(mode):
    W64 = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (5, 3)))
    x64 = np.array([0.2, -0.5, 1.0])
    W32, x32 = jnp.asarray(W64, jnp.float32), jnp.asarray(x64, jnp.float32)
    J = jacopt.jacobian(lambda x: jnp.tanh(W32 @ x), mode=mode)(x32)
    assert J.dtype == jnp.float32
    h = np.tanh(W64 @ x64)
    np.testing.assert_allclose(J, np.diag(1 - h**2) @ W64, rtol=1e-5, atol=1e-6)
    H = jacopt.hessian(lambda x: jnp.sum(jnp.sin(x) ** 2))(x32)
    assert H.dtype == jnp.float32
    np.testing.assert_allclose(H, np.diag(2 * np.cos(2 * x64)), rtol=1e-5, atol=1e-6)


# --- bad input: clear errors naming the argument, before any work ---------------------------------
class CountingFunction:
    def __init__(self):
        self.calls = 0

    def __call__(self, x, *rest):
        self.calls += 1
        return jnp.sin(x)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (jnp.arange(3), TypeError, r"argument 0 \(argnums=0\).*integer.*float"),
        (3, TypeError, r"argument 0.*integer 3.*3\.0"),
        (True, TypeError, r"argument 0.*integer"),
        ("abc", TypeError, r"argument 0.*str"),
        ({"w": jnp.ones(2), "name": "layer"}, TypeError, r"\['name'\].*str"),
        (jnp.ones(2, jnp.complex64), TypeError, r"complex"),
        ({"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2)}, TypeError, r"mixes floating dtypes"),
        (jnp.zeros((0,)), ValueError, r"argument 0.*empty"),
        (None, ValueError, r"empty"),
        ([], ValueError, r"empty"),
    ],
)
def test_bad_inputs_raise_before_f_runs(bad, error, message):
    f = CountingFunction()
    with pytest.raises(error, match=message):
        jacopt.jacobian(f)(bad)
    assert f.calls == 0


def test_bad_argnums():
    f = CountingFunction()
    with pytest.raises(ValueError, match=r"argnums=2 is out of range.*1 positional"):
        jacopt.jacobian(f, argnums=2)(jnp.ones(2))
    with pytest.raises(ValueError, match=r"argnums=\(0, -2\) names the same argument twice"):
        jacopt.jacobian(f, argnums=(0, -2))(jnp.ones(2), jnp.ones(2))
    with pytest.raises(TypeError, match="argnums"):
        jacopt.jacobian(f, argnums="0")
    with pytest.raises(TypeError, match="argnums"):
        jacopt.jacobian(f, argnums=(0, 1.0))
    with pytest.raises(ValueError, match="argnums"):
        jacopt.jacobian(f, argnums=())
    # the integer check names the differentiated argument, not the others
    with pytest.raises(TypeError, match=r"argument 1 \(argnums=1\)"):
        jacopt.jacobian(f, argnums=1)(jnp.ones(2), jnp.arange(2))
    assert f.calls == 0
    # non-differentiated arguments may be anything
    g = lambda x, n, name: jnp.sin(x) * n
    np.testing.assert_allclose(jacopt.jacobian(g)(jnp.zeros(2), 3, "label"), 3 * np.eye(2))


def test_bad_options_raise_at_transformation_time():
    with pytest.raises(ValueError, match="mode"):
        jacopt.jacobian(jnp.sin, mode="forward")
    with pytest.raises(ValueError, match="chunk_size"):
        jacopt.jacobian(jnp.sin, chunk_size=0)
    with pytest.raises(ValueError, match="not both"):
        jacopt.jacobian(jnp.sin, chunk_size=2, max_memory_bytes=100)


def test_integer_output_and_bad_aux_are_reported():
    with pytest.raises(TypeError, match="output leaf.*int"):
        jacopt.jacobian(lambda x: (x > 0).astype(jnp.int32))(jnp.ones(2))
    with pytest.raises(TypeError, match="has_aux"):
        jacopt.jacobian(jnp.sin, has_aux=True)(jnp.ones(2))


def test_as_matrix_uses_ravel_pytree_order():
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([1.0, 2.0])}
    f = lambda t: jnp.concatenate([t["w"].ravel() ** 2, t["b"]])
    J = jacopt.jacobian(f, as_matrix=True)(tree)
    flat, _ = ravel_pytree(tree)  # dict keys sorted: "b" first, then "w"
    expected = jax.jacfwd(lambda v: f(ravel_pytree(tree)[1](v)))(flat)
    np.testing.assert_array_equal(J, expected)
    assert J[0, 2] == 0.0 and J[6, 0] == 1.0  # d b0 / d b0 sits at column 0
