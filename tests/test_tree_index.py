"""jacopt.TreeIndex: flat index <-> pytree leaf element, checked against ravel_pytree."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jacopt import TreeIndex


def mlp_params(sizes=(6, 4, 3, 1)):
    """Seed 004's [6, 4, 3, 1] MLP: [(W0, b0), (W1, b1), (W2, b2)], 47 numbers."""
    return [(jnp.zeros((n_out, n_in)), jnp.zeros(n_out))
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]


class Layer(NamedTuple):
    weight: jax.Array
    bias: jax.Array


@pytest.fixture(params=["list", "dict", "namedtuple"])
def tree(request):
    if request.param == "list":
        return mlp_params()
    if request.param == "dict":
        return {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3), "s": jnp.zeros(()),
                "nested": {"z": [jnp.zeros((1, 2, 2))]}}
    return (Layer(jnp.zeros((3, 2)), jnp.zeros(3)), jnp.zeros(4))


def test_every_flat_index_round_trips_and_agrees_with_ravel_pytree(tree):
    index = TreeIndex(tree)
    flat, unravel = ravel_pytree(tree)
    assert index.size == flat.size == len(index)
    for i in range(index.size):
        path = index.path(i)
        assert index.index(path) == i
        # the element named by the path is the one ravel_pytree puts at position i
        marker = unravel(jnp.zeros(index.size).at[i].set(1.0))
        element = marker
        keys = index.keys[[k for k in range(len(index.keys))
                           if path[: len(index.keys[k])] == index.keys[k]][-1]]
        for key in keys:
            by_attribute = isinstance(key, str) and not isinstance(element, dict)
            element = getattr(element, key) if by_attribute else element[key]
        assert element[path[len(keys):]] == 1.0


def test_seed_004_columns_are_named():
    index = TreeIndex(mlp_params())
    assert index.size == 47
    assert index.index((0, 0, 0, 0)) == 0          # W0[0, 0]
    assert index.index((0, 1, 3)) == 24 + 3       # b0[3] after the 24 entries of W0
    assert index.index((1, 1, 2)) == 24 + 4 + 12 + 2  # params[1][1][2] = b1[2]
    assert index.index((1, 0, (2, 1))) == index.index((1, 0, 2, 1)) == 28 + 2 * 4 + 1
    assert index.path(46) == (2, 1, 0)            # the last bias
    assert index.label(42) == "[1][1][2]"
    assert index.label(9) == "[0][0][1, 3]"
    assert index.leaf_slice((2, 0)) == slice(43, 46)
    assert index.labels()[:2] == ["[0][0][0, 0]", "[0][0][0, 1]"]
    assert index.index((1, 1, -1)) == index.index((1, 1, 2))  # negative element index, as numpy


def test_unravel_and_ravel_invert_each_other_and_match_ravel_pytree():
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "b": [jnp.array([10.0, 11.0]), jnp.array(12.0)]}
    index = TreeIndex(tree)
    flat, unravel = ravel_pytree(tree)
    np.testing.assert_array_equal(index.ravel(tree), flat)
    back = index.unravel(flat)
    for got, want in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(unravel(flat))):
        np.testing.assert_array_equal(got, want)
    # works on traced vectors
    doubled = jax.jit(lambda v: index.unravel(2 * v))(flat)
    np.testing.assert_array_equal(doubled["w"], 2 * tree["w"])


def test_shape_dtype_structs_and_scalars():
    index = TreeIndex({"a": jax.ShapeDtypeStruct((2, 2), jnp.float32), "b": 1.0})
    assert index.size == 5
    assert index.path(4) == ("b",)
    assert index.label(4) == "['b']"
    assert TreeIndex(jnp.zeros(3)).label(1) == "[1]"
    assert TreeIndex(jnp.zeros(())).label(0) == "[]"


def test_errors_name_the_problem():
    index = TreeIndex(mlp_params())
    with pytest.raises(KeyError, match="names no leaf"):
        index.index((5, 0, 0))
    with pytest.raises(KeyError, match=r"shape \(4,\)"):
        index.index((0, 1, 4))           # b0 has 4 entries
    with pytest.raises(KeyError, match="does not fit"):
        index.index((0, 0, 1))           # W0 needs two indices
    with pytest.raises(IndexError, match="out of range"):
        index.path(47)
    with pytest.raises(ValueError, match=r"shape \(47,\)"):
        index.unravel(jnp.zeros(46))
    with pytest.raises(ValueError, match="structure"):
        index.ravel([jnp.zeros(2)])
    wrong = jax.tree_util.tree_map(jnp.zeros_like, mlp_params())
    wrong[0] = (jnp.zeros((4, 5)), wrong[0][1])  # W0 is (4, 6)
    with pytest.raises(ValueError, match=r"leaf \[0\]\[0\] has shape \(4, 5\)"):
        index.ravel(wrong)
    with pytest.raises(KeyError):
        index.leaf_slice((0,))


def test_empty_leaves_are_skipped_by_path():
    index = TreeIndex([jnp.zeros(2), jnp.zeros(0), jnp.zeros(1)])
    assert index.size == 3
    assert index.path(2) == (2, 0)
