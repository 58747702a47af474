"""Colourings: validity (checked independently here), the lower bound, and quality on banded
and Brusselator patterns."""
import numpy as np
import pytest
import scipy.sparse as sp

from jacopt.coloring import (
    as_pattern,
    choose_mode,
    color_columns,
    color_rows,
    is_valid_column_coloring,
    is_valid_row_coloring,
    is_valid_star_coloring,
    lower_bound,
    star_coloring,
)


def _columns_conflict_free(dense, colors):
    """Independent check: no row holds two columns of one colour."""
    for row in dense:
        cols = np.flatnonzero(row)
        if len(set(colors[cols].tolist())) != cols.size:
            return False
    return True


def _banded(n, lower, upper):
    return sp.diags_array([np.ones(n - abs(k)) for k in range(-lower, upper + 1)],
                          offsets=list(range(-lower, upper + 1)), shape=(n, n)).astype(bool)


def _random_pattern(seed, m=30, n=20, density=0.15):
    rng = np.random.default_rng(seed)
    return rng.random((m, n)) < density


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("order", ["natural", "largest_first", "smallest_last", "best"])
def test_column_and_row_colorings_are_valid(seed, order):
    dense = _random_pattern(seed)
    cols = color_columns(dense, order)
    rows = color_rows(dense, order)
    assert _columns_conflict_free(dense, cols) and is_valid_column_coloring(dense, cols)
    assert _columns_conflict_free(dense.T, rows) and is_valid_row_coloring(dense, rows)
    assert cols.max() + 1 >= lower_bound(dense, "fwd")
    assert rows.max() + 1 >= lower_bound(dense, "rev")


def test_validity_checkers_reject_conflicts():
    dense = np.array([[1, 1, 0], [0, 1, 1]], bool)
    assert not is_valid_column_coloring(dense, np.array([0, 0, 1]))
    assert is_valid_column_coloring(dense, np.array([0, 1, 0]))
    assert not is_valid_row_coloring(dense, np.array([0, 0]))
    path = _banded(4, 1, 1)  # the path 0-1-2-3
    assert not is_valid_star_coloring(path, np.array([0, 1, 0, 1]))  # bicoloured P4
    assert is_valid_star_coloring(path, np.array([0, 1, 0, 2]))
    assert not is_valid_star_coloring(path, np.array([0, 0, 1, 2]))  # not proper


@pytest.mark.parametrize("lower,upper", [(0, 0), (1, 1), (2, 1), (3, 3)])
def test_banded_patterns_color_optimally(lower, upper):
    pattern = _banded(200, lower, upper)
    colors = color_columns(pattern)
    assert is_valid_column_coloring(pattern, colors)
    # A band of width w needs exactly w colours (j mod w is optimal).
    assert colors.max() + 1 == lower_bound(pattern) == lower + upper + 1


def test_brusselator_pattern_colors_within_a_small_factor():
    import jax.numpy as jnp

    from jacopt.problems.brusselator import brusselator_residual, brusselator_start
    from jacopt.sparsity import jacobian_sparsity

    pattern = jacobian_sparsity(brusselator_residual, jnp.asarray(brusselator_start(16)))
    coloring = choose_mode(pattern)
    assert coloring.lower_bound == 6
    assert is_valid_column_coloring(pattern, coloring.colors)
    assert 6 <= coloring.num_colors <= 2 * 6


def test_tabu_effort_keeps_colorings_valid_and_never_adds_colors():
    import jax.numpy as jnp

    from jacopt.problems.brusselator import brusselator_residual, brusselator_start
    from jacopt.sparsity import jacobian_sparsity

    pattern = jacobian_sparsity(brusselator_residual, jnp.asarray(brusselator_start(10)))
    greedy = color_columns(pattern)
    improved = color_columns(pattern, effort=3000)
    assert is_valid_column_coloring(pattern, improved)
    assert 6 <= improved.max() + 1 <= greedy.max() + 1
    dense = _random_pattern(7, 40, 30, 0.2)
    colors = color_rows(dense, effort=500)
    assert is_valid_row_coloring(dense, colors) and colors.max() + 1 >= lower_bound(dense, "rev")


def test_choose_mode_picks_reverse_for_a_dense_row():
    # One dense row (n colours by columns) but rows are structurally orthogonal otherwise.
    dense = np.zeros((5, 40), bool)
    dense[0] = True
    dense[1:, :4] = np.eye(4, dtype=bool)
    coloring = choose_mode(dense)
    assert coloring.mode == "rev" and coloring.num_colors == 2
    assert is_valid_row_coloring(dense, coloring.colors)
    assert choose_mode(dense, "fwd").num_colors == 40


@pytest.mark.parametrize("seed", range(5))
def test_star_coloring_is_valid_and_no_worse_than_distance2(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((40, 40)) < 0.08
    sym = a | a.T | np.eye(40, dtype=bool)
    colors = star_coloring(sym)
    assert is_valid_star_coloring(sym, colors)
    assert colors.max() <= color_columns(sym).max()


def test_star_coloring_uses_fewer_colors_than_distance2_on_arrowhead():
    n = 30
    arrow = np.eye(n, dtype=bool)
    arrow[0, :] = arrow[:, 0] = True
    star = star_coloring(arrow)
    assert is_valid_star_coloring(arrow, star)
    assert star.max() + 1 == 2  # the hub one colour, all leaves another
    assert color_columns(arrow).max() + 1 == n


def test_as_pattern_accepts_each_kind_and_checks_shape():
    from jax.experimental import sparse as jsparse

    dense = _random_pattern(0, 6, 4)
    for kind in (dense, sp.csr_matrix(dense), sp.coo_array(dense),
                 jsparse.BCOO.fromdense(dense.astype(float))):
        np.testing.assert_array_equal(as_pattern(kind).toarray(), dense)
    with pytest.raises(ValueError, match="sparsity has shape"):
        as_pattern(dense, shape=(4, 6))
