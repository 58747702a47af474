"""The batch benchmark's core on a few fits: one vmapped least_squares gives each member its own
answer (checked against SciPy member by member), and a member with NaN data fails alone."""
import numpy as np

from jacopt.benchmarks import batch

NUM_FITS = 6
NAN_MEMBER = 2


def test_make_batch_is_seeded_and_varied():
    a, b = batch.make_batch(NUM_FITS, seed=3), batch.make_batch(NUM_FITS, seed=3)
    np.testing.assert_array_equal(a.ydata, b.ydata)
    np.testing.assert_array_equal(a.starts, b.starts)
    assert a.ydata.shape == (NUM_FITS, 14) and a.starts.shape == (NUM_FITS, 2)
    assert len(np.unique(a.ydata[:, 0])) == NUM_FITS  # different noise per member
    assert len(np.unique(a.starts[:, 0])) == NUM_FITS  # different starts per member
    assert not np.array_equal(batch.make_batch(NUM_FITS, seed=4).ydata, a.ydata)


def test_max_relative_difference():
    ref = np.array([[2.0, 4.0], [1.0, 1.0]])
    got = np.array([[2.0, 4.4], [1.5, 1.0]])
    assert batch.max_relative_difference(got, ref) == 0.5
    assert np.isclose(batch.max_relative_difference(got, ref, mask=[True, False]), 0.1)


def test_vmapped_fits_match_scipy_per_member_and_a_nan_member_fails_alone():
    data = batch.make_batch(NUM_FITS, seed=1)
    ydata = data.ydata.copy()
    ydata[NAN_MEMBER, 4] = np.nan
    records = batch.run(data=data._replace(ydata=ydata), scipy_fits=NUM_FITS, repeats=1)
    jac, scipy_default, scipy_tight = records
    assert jac["method"].startswith("jacopt") and jac["num_fits"] == NUM_FITS
    # The NaN member stops with NONFINITE; every other member succeeds on its own.
    assert jac["status_counts"].get("NONFINITE") == 1
    assert jac["num_success"] == NUM_FITS - 1
    # SciPy refuses the NaN member; on the other five, each jacopt member has SciPy's answer
    # (different data and starts, so different answers) to 1e-8 relative.
    assert scipy_tight["status_counts"].get("RAISED") == 1
    assert scipy_tight["compared_fits"] == NUM_FITS - 1
    assert scipy_tight["max_rel_param_diff"] < 1e-8
    assert scipy_default["max_rel_param_diff"] < 1e-5  # SciPy's default tolerances stop early
    assert jac["compile_s"] > 0 and jac["run_s"] > 0
    for rec in (scipy_default, scipy_tight):
        assert rec["timed_fits"] == NUM_FITS and rec["speedup"] > 0
    text = batch.format_table(records)
    assert "jacopt takes" in text and "100x target" in text


def test_fits_cycling_at_rounding_level_stop_with_precision_limit():
    # A few of make_batch(1000, seed=0)'s fits reach the optimum and then cycle through points
    # an ulp or two apart (accepted by the natural monotonicity test). Without LM's stall test
    # they run to max_steps (in a vmapped batch such members keep the whole loop running);
    # with it they stop with PRECISION_LIMIT at SciPy's answer. Which members cycle depends on
    # the rounding of the compiled code, so the test finds them first.
    import jax

    import jacopt
    from jacopt.problems import nist
    from jacopt.solvers import LevenbergMarquardt

    data = batch.make_batch(1000, seed=0)
    residual = nist.load("Misra1a").residual

    def solver_for(solver):  # Moré's scaling: with it some members of this batch cycle
        return jax.jit(lambda x0, x, y: jacopt.least_squares(
            residual, x0, args=(x, y), solver=solver, max_steps=200, x_scale="jac"))

    unguarded = solver_for(LevenbergMarquardt(stall_limit=10**9))
    cycling = [i for i in range(len(data.starts))
               if unguarded(data.starts[i], data.x, data.ydata[i]).status_name == "MAX_STEPS"]
    assert cycling, "no fit cycles with this platform's rounding: find another batch"
    guarded = solver_for("lm")
    for i in cycling[:3]:
        result = guarded(data.starts[i], data.x, data.ydata[i])
        assert result.status_name == "PRECISION_LIMIT" and bool(result.success)
        assert int(result.num_steps) < 60
        reference = batch.scipy_fit(data.x, data.ydata[i], data.starts[i], tight=True)
        np.testing.assert_allclose(np.asarray(result.params), reference[0], rtol=1e-9)
