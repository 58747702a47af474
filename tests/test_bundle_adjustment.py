"""Bundle adjustment and the Schur-complement LM (solver="lm-schur"): the analytic pattern
against detection and the dense Jacobian, the Schur step against the dense damped step, the
final cost against dense LM and SciPy, and the errors for a group that is not block-diagonal."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

import jacopt
from jacopt.problems.bundle_adjustment import make_scene, residual, small_scene
from jacopt.solvers.schur_lm import SchurLevenbergMarquardt, schur_step, structure_for
from jacopt.solvers.sparse_lm import plan_for
from jacopt.sparsity import jacobian_sparsity

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def scene():
    return small_scene(seed=3)


@pytest.fixture(scope="module")
def tiny():
    return make_scene(4, 30, 3, seed=1)


def _dense(scene, x=None):
    flat, unravel = ravel_pytree(scene.x0 if x is None else x)

    def g(v):
        return residual(unravel(v), *scene.args).reshape(-1)

    return np.asarray(jax.jacfwd(g)(flat)), np.asarray(g(flat))


def test_analytic_pattern_equals_detection_and_covers_the_jacobian(tiny):
    scene = tiny
    analytic = scene.jac_sparsity()
    detected = jacobian_sparsity(lambda p: residual(p, *scene.args), scene.x0)
    assert analytic.shape == detected.shape == (2 * scene.num_observations, 8 * 4 + 3 * 30)
    assert (analytic != detected).nnz == 0
    J, _ = _dense(scene)
    assert not np.any((J != 0) & ~analytic.toarray())  # no nonzero missed


def test_auto_detection_eliminates_the_points(scene):
    plan = plan_for(residual, scene.x0, scene.args, scene.jac_sparsity(), "fwd")
    st = structure_for(plan, "auto")
    assert (st.num_blocks, st.block_size) == (scene.num_points, 3)
    assert st.num_reduced == 8 * scene.num_cameras
    named = SchurLevenbergMarquardt.eliminating(scene.x0, "points").eliminate
    assert named == ("points", 8 * scene.num_cameras, scene.num_points, 3)


@pytest.mark.parametrize("eliminate", ["auto", "points", "cameras"])
def test_schur_step_equals_the_dense_damped_step(tiny, eliminate):
    scene = tiny
    plan = plan_for(residual, scene.x0, scene.args, scene.jac_sparsity(), "fwd")
    group = (eliminate if eliminate == "auto"
             else SchurLevenbergMarquardt.eliminating(scene.x0, eliminate).eliminate)
    st = structure_for(plan, group)
    J, r = _dense(scene)
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, J.shape[1]) * np.maximum(np.linalg.norm(J, axis=0), 1.0)
    grad = J.T @ r
    solve = jax.jit(lambda values, lam: schur_step(st, values, jnp.asarray(grad),
                                                   jnp.asarray(scale), lam))
    for lam in (1e-6, 1e-2, 10.0):
        dense = np.linalg.solve(J.T @ J + lam * np.diag(scale ** 2), -grad)
        step = solve(jnp.asarray(J[plan.rows, plan.cols]), lam)
        np.testing.assert_allclose(np.asarray(step), dense, rtol=0,
                                   atol=1e-9 * np.max(np.abs(dense)))


def _free(scene, x):
    """The flat parameters outside the gauge (the poses of cameras 0 and 1 have empty
    columns: where a solver leaves them is no part of the minimiser)."""
    flat = np.asarray(ravel_pytree(x)[0])
    keep = np.ones(flat.size, bool)
    keep[[8 * c + i for c in range(2) for i in range(6)]] = False
    return flat[keep]


@pytest.mark.parametrize("loss", ["linear", "huber"])
def test_final_cost_equals_dense_lm_and_scipy(tiny, loss):
    pattern = tiny.jac_sparsity()
    schur = jacopt.least_squares(residual, tiny.x0, args=tiny.args, solver="lm-schur",
                                 jac_sparsity=pattern, loss=loss, f_scale=2.0)
    dense = jacopt.least_squares(residual, tiny.x0, args=tiny.args, solver="lm", loss=loss,
                                 f_scale=2.0)
    assert schur.success and dense.success
    np.testing.assert_allclose(float(schur.cost), float(dense.cost), rtol=1e-10)
    flat0, unravel = ravel_pytree(tiny.x0)

    def fun(v):
        return np.asarray(residual(unravel(jnp.asarray(v)), *tiny.args)).reshape(-1)

    jac = jax.jit(jax.jacfwd(lambda v: residual(unravel(v), *tiny.args).reshape(-1)))
    ref = scipy.optimize.least_squares(fun, np.asarray(flat0), jac=lambda v: np.asarray(jac(v)),
                                       method="trf", loss=loss, f_scale=2.0, ftol=1e-15,
                                       xtol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(float(schur.cost), ref.cost, rtol=1e-9)
    np.testing.assert_allclose(_free(tiny, schur.params), _free(tiny, unravel(ref.x)),
                               rtol=1e-6, atol=1e-6)


def _chain(x, data):
    """Residuals that couple neighbouring rows of ``x["a"]``: not block-diagonal by rows."""
    a = x["a"]
    return jnp.concatenate([a[:-1, 0] - a[1:, 1] - data[:-1], a[:, 0] + a[:, 1] - 1.0])


def test_a_group_that_is_not_block_diagonal_is_refused():
    x0 = {"a": jnp.zeros((5, 2)), "b": jnp.zeros(3)}
    solver = SchurLevenbergMarquardt.eliminating(x0, "a")
    with pytest.raises(ValueError, match=r"eliminate='a' is not a block-diagonal group: "
                                         r"residual row 0 depends on its blocks 0 and 1"):
        jacopt.least_squares(_chain, x0, args=(jnp.ones(5),), solver=solver,
                             jac_sparsity="auto")
    with pytest.raises(ValueError, match=r"^leaf: x0 has no leaf named 'points'"):
        SchurLevenbergMarquardt.eliminating(x0, "points")
    for wrong in ("points", np.array([1, 2]), ("a", 0, 5)):
        with pytest.raises(ValueError, match="eliminate must be 'auto'"):
            SchurLevenbergMarquardt(eliminate=wrong)


def test_a_pattern_without_a_block_diagonal_group_is_refused():
    def dense(x):
        return jnp.stack([jnp.sum(x), jnp.sum(x * x), jnp.prod(x)])

    # one block of 20 columns (every row touches them all): too large to eliminate
    with pytest.raises(ValueError, match="no block-diagonal group"):
        jacopt.least_squares(dense, jnp.ones(20), solver="lm-schur")


def test_vmap_over_starts_matches_single_solves(tiny):
    pattern = tiny.jac_sparsity()

    def solve(x0):
        res = jacopt.least_squares(residual, x0, args=tiny.args, solver="lm-schur",
                                   jac_sparsity=pattern)
        return res.cost, res.status

    far = jax.tree.map(lambda a: a * 1.001, tiny.x0)
    costs, statuses = jax.vmap(solve)(jax.tree.map(lambda a, b: jnp.stack([a, b]), tiny.x0, far))
    for i, x0 in enumerate((tiny.x0, far)):
        cost, status = solve(x0)
        np.testing.assert_allclose(float(costs[i]), float(cost), rtol=1e-10)
        assert int(statuses[i]) == int(status)


def test_bounds_hold_points_like_dense_lm(tiny):
    # boxes of +-0.01 around the start's points: some are active at the end, so the Schur
    # step runs with masked (fixed) columns in the eliminated group
    points = tiny.x0["points"]
    free = jnp.full_like(tiny.x0["cameras"], jnp.inf)
    bounds = ({"cameras": -free, "points": points - 0.01},
              {"cameras": free, "points": points + 0.01})
    schur = jacopt.least_squares(residual, tiny.x0, args=tiny.args, solver="lm-schur",
                                 jac_sparsity=tiny.jac_sparsity(), bounds=bounds)
    dense = jacopt.least_squares(residual, tiny.x0, args=tiny.args, solver="lm",
                                 bounds=bounds)
    assert schur.success and dense.success
    at_bound = np.isclose(np.abs(np.asarray(schur.params["points"] - points)), 0.01)
    assert at_bound.any()
    np.testing.assert_allclose(float(schur.cost), float(dense.cost), rtol=1e-9)


def test_a_named_group_on_an_empty_pattern_solves_like_lm_sparse():
    # no row depends on x: nothing couples the groups, and the step is the damped gradient's
    x0 = {"a": jnp.ones((3, 2)), "b": jnp.ones(2)}

    def fun(x):
        return jnp.ones(4) + 0.0 * x["b"][0]

    empty = np.zeros((4, 8), bool)
    solver = SchurLevenbergMarquardt.eliminating(x0, "a")
    schur = jacopt.least_squares(fun, x0, solver=solver, jac_sparsity=empty)
    sparse = jacopt.least_squares(fun, x0, solver="lm-sparse", jac_sparsity=empty)
    assert int(schur.status) == int(sparse.status)
    np.testing.assert_allclose(float(schur.cost), float(sparse.cost), rtol=1e-12)
    np.testing.assert_allclose(ravel_pytree(schur.params)[0], ravel_pytree(x0)[0])
