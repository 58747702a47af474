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


@pytest.mark.parametrize("seed", range(6))
def test_auto_mode_equals_colouring_both_modes(seed):
    # choose_mode colours one mode first and may skip the other by its lower bound: the
    # result must be what colouring both and keeping the fewer colours (ties: fwd) gives.
    rng = np.random.default_rng(seed)
    m, n = [(30, 20), (20, 30), (50, 12), (12, 50), (40, 40), (25, 25)][seed]
    dense = rng.random((m, n)) < 0.15
    dense[0, : n // 2] = seed % 2 == 0  # a dense-ish row on some seeds
    fwd, rev = color_columns(dense), color_rows(dense)
    want_mode = "fwd" if fwd.max() <= rev.max() else "rev"
    coloring = choose_mode(dense)
    assert coloring.mode == want_mode
    np.testing.assert_array_equal(coloring.colors, fwd if want_mode == "fwd" else rev)


def _camera_point_pattern(num_cameras=4, camera_size=6, num_points=1500, track=2):
    """Bundle-adjustment-like rows: two per observation, each touching one camera block and
    one 3-column point block; every camera is seen in thousands of rows."""
    rng = np.random.default_rng(0)
    rows, cols = [], []
    r = 0
    for p in range(num_points):
        for c in rng.choice(num_cameras, track, replace=False):
            for _ in range(2):
                rows += [r] * (camera_size + 3)
                cols += list(range(c * camera_size, (c + 1) * camera_size))
                cols += list(num_cameras * camera_size + 3 * p + np.arange(3))
                r += 1
    shape = (r, num_cameras * camera_size + 3 * num_points)
    return sp.csr_array((np.ones(len(rows), bool), (rows, cols)), shape=shape)


def test_auto_mode_never_builds_a_huge_row_graph(monkeypatch):
    import jacopt.coloring as coloring_module

    pattern = _camera_point_pattern()
    # the row graph (cliques of ~3,000 rows per camera column) is far larger than the
    # column graph: auto must colour columns only
    assert coloring_module.graph_size(pattern, "rev") > 16 * coloring_module.graph_size(
        pattern, "fwd")
    assert coloring_module.graph_size(pattern, "fwd") == 9 * 9 * pattern.shape[0]
    calls = []
    real = coloring_module.color_columns
    monkeypatch.setattr(coloring_module, "color_columns",
                        lambda P, *a, **k: calls.append(P.shape) or real(P, *a, **k))
    coloring = choose_mode(pattern)
    assert coloring.mode == "fwd" and calls == [pattern.shape]  # rows (P.T) never coloured
    assert is_valid_column_coloring(pattern, coloring.colors)
    assert coloring.num_colors >= lower_bound(pattern) == 9


def test_auto_mode_skips_a_graph_far_larger_than_the_other(monkeypatch):
    # A full row (400 colours by columns) over 48,000 rows of one nonzero each: rows would
    # need fewer colours (their lower bound is 121), but the row graph's size bound is over
    # 16 times the column graph's and over GRAPH_FLOOR, so it is not built.
    import jacopt.coloring as coloring_module

    n, m = 400, 48_001
    rows = np.concatenate([np.zeros(n, int), np.arange(1, m)])
    cols = np.concatenate([np.arange(n), np.arange(1, m) % n])
    pattern = sp.csr_array((np.ones(rows.size, bool), (rows, cols)), shape=(m, n))
    fwd_size, rev_size = (coloring_module.graph_size(pattern, k) for k in ("fwd", "rev"))
    assert fwd_size == n * n + (m - 1) and rev_size == n * (1 + (m - 1) // n) ** 2
    assert rev_size > max(coloring_module.GRAPH_RATIO * fwd_size, coloring_module.GRAPH_FLOOR)
    assert lower_bound(pattern, "rev") == 121 < n == lower_bound(pattern, "fwd")
    calls = []
    real = coloring_module.color_columns
    monkeypatch.setattr(coloring_module, "color_columns",
                        lambda P, *a, **k: calls.append(P.shape) or real(P, *a, **k))
    coloring = choose_mode(pattern)
    assert coloring.mode == "fwd" and coloring.num_colors == n and calls == [(m, n)]


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
