"""Fits whose data are split over several devices (8 fake CPU devices, in a subprocess: the
device count is fixed when JAX starts, and the rest of the suite keeps one device). The checks
themselves are in tests/_sharded_checks.py; each is against the same fit on one device, whose
QR the TSQR of the sharded fit must reproduce (Demmel et al. 2012). The default run is one
subprocess with a few compiled solves (2 and 8 devices, padding, a NaN shard, collectives,
memory, curve_fit's covariance); 4 devices, the other NIST problems and solvers, bounds, an
Explicit mesh and sharded batches are slow."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jacopt._sharding import row_sharding, shard_rows

SCRIPT = os.path.join(os.path.dirname(__file__), "_sharded_checks.py")
TOL = 1e-10
SUCCESS = ("GTOL", "FTOL", "XTOL", "PRECISION_LIMIT")


def run_checks(*argv, timeout=600):
    env = dict(os.environ, JACOPT_CACHE="0", JAX_PLATFORMS="cpu")  # fake CPU devices
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, SCRIPT, *argv], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def checks():
    """The default selection, one subprocess (a few compiled solves)."""
    return run_checks("default")


@pytest.fixture(scope="module")
def extra():
    """The slow selection, one subprocess: every edge case, 2 and 4 devices too."""
    return run_checks("extra")


def test_sharded_nist_fits_match_one_device(checks):
    fits = checks["nist"]
    assert set(fits) == {"Misra1a/lm/2", "Misra1a/lm/8"}
    for key, fit in fits.items():
        assert fit["rel"] < TOL, (key, fit)
        assert fit["status"] in SUCCESS and fit["ref_status"] in SUCCESS, (key, fit)
        assert fit["replicated"], key
    # Misra1a's 14 points: split 2 ways as they are, padded to 16 for 8 devices
    assert fits["Misra1a/lm/2"]["padded_m"] == 14 and fits["Misra1a/lm/8"]["padded_m"] == 16


def test_padded_sharded_curve_fit_of_1e5_points_matches_one_device(checks):
    # 99,997 points padded to 100,000 by shard_rows and split 8 ways, the mask passed to
    # curve_fit: the parameters, the degrees of freedom (real points only) and the covariance
    # are the unpadded single-device fit's, and SciPy's (given the same analytic Jacobian)
    fit = checks["large"]
    assert fit["m"] == 99_997 and fit["padded_m"] == 100_000 and fit["devices"] == 8
    assert fit["rows_split"] and fit["valid"]
    assert fit["dof"] == fit["ref_dof"] == 99_997 - 4
    assert fit["rel"] < TOL and fit["pcov_rel"] < TOL and fit["stderr_rel"] < TOL
    assert fit["scipy_rel"] < 1e-9
    assert fit["status"] == fit["ref_status"] == "XTOL"


def assert_covariance_gathers_only_triangles(cov, counts):
    """curve_fit's covariance of a Jacobian split by rows: (R^T R)^{-1} from a TSQR, the same
    values as on one device; the only traffic is the N (n x n) triangles (none m-sized), and
    each device's scratch memory is 1/N of the single-device program's."""
    m, n_params = cov["m"], 4
    temp = {int(k): v for k, v in cov["temp_bytes"].items()}
    assert set(temp) == {1, *counts}
    assert cov["collectives"]["1"] == []
    for n in counts:
        assert cov["pcov_rel"][str(n)] < 1e-11 and cov["one_device_rel"][str(n)] < 1e-11
        assert cov["dof_rel"][str(n)] == 0.0  # residual variance uses m - n, not padded_m - n
        found = cov["collectives"][str(n)]
        gathers = [shape for op, shape, _ in found if op == "all-gather"]
        assert gathers == [f"f64[{n * n_params},{n_params}]{{1,0}}"], found
        for op, shape, _ in found:
            assert str(m) not in shape and str(cov["padded_m"]) not in shape, (op, shape)
            assert str(cov["padded_m"] // n) not in shape, (op, shape)
        assert temp[n] < 1.1 * temp[1] / n, (n, temp)


def test_covariance_of_split_rows_gathers_only_triangles(checks):
    assert_covariance_gathers_only_triangles(checks["covariance"], (2, 8))


def assert_scratch_falls_as_one_over_devices(compiled, counts):
    temp = {int(k): v for k, v in compiled["temp_bytes"].items()}
    assert set(temp) == {1, *counts}
    for n in counts:
        # the Jacobian and residual rows dominate: 1/N of them, plus O(n^2) replicated blocks
        assert temp[n] < 1.1 * temp[1] / n, (n, temp)


def test_per_device_scratch_memory_falls_as_one_over_devices(checks):
    assert_scratch_falls_as_one_over_devices(checks["compiled"], (8,))


@pytest.mark.slow
def test_per_device_scratch_memory_on_2_4_8_devices(extra):
    assert_scratch_falls_as_one_over_devices(extra["compiled"], (2, 4, 8))


def test_collectives_per_iteration_do_not_depend_on_m(checks):
    small, large = checks["compiled"]["collectives"]["8192"], checks["compiled"]["collectives"][
        "65536"]
    assert small == large and len(large) > 0
    ops = [op for op, _, _ in large]
    assert ops.count("all-gather") == 1  # the stacked R factors of TSQR: 8 x (n+1) rows
    assert all(in_loop for _, _, in_loop in large)
    gathered = [shape for op, shape, _ in large if op == "all-gather"][0]
    assert gathered.startswith("f64[40,5]")
    for op, shape, _ in large:  # nothing m-sized moves: n = 4 parameters
        assert "8192" not in shape and "65536" not in shape, (op, shape)


def test_nan_in_one_shard_stops_with_nonfinite(checks):
    assert checks["edges"]["nan"] == {"status": "NONFINITE", "shard": 6}


@pytest.mark.slow
def test_rows_the_mesh_does_not_divide(extra):
    edges = extra["edges"]
    # JAX refuses to place them (shard_rows pads instead) ...
    assert "evenly divide" in edges["uneven_device_put"]
    # ... and a residual count the devices do not divide (a prior term) is padded by TSQR
    assert edges["odd_m"]["m"] == 17 and edges["odd_m"]["rel"] < TOL


@pytest.mark.slow
def test_bounds_explicit_mesh_and_sharded_batch(extra):
    edges = extra["edges"]
    assert edges["bounded"]["rel"] < TOL and edges["bounded"]["params"][0] == 200.0
    assert edges["explicit_mesh"]["rel"] < TOL
    batch = edges["batch"]
    assert batch["rel"] < TOL and batch["success"] == 64
    assert batch["params_spec"] == "P('data',)"  # each member stays where its data live
    # the only collective: the loop's stopping test (any member still running)
    assert [op for op, _, _ in batch["collectives"]] == ["all-reduce"]
    assert batch["collectives"][0][1].startswith("pred[]")


def test_shard_rows_pads_and_masks_on_one_device():
    import jax
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    x, y, mask = shard_rows(mesh, "data", np.arange(5.0), np.ones(5))
    assert x.shape == (5,) and mask.tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="same first-axis length"):
        shard_rows(mesh, "data", np.arange(5.0), np.ones(4))
    with pytest.raises(ValueError, match="not an axis"):
        shard_rows(mesh, "rows", np.arange(5.0))
    # one device: nothing is split, so the fit keeps its single-device path
    assert row_sharding((x, y))[0] is None


def test_tsqr_factor_matches_triangular_factor_on_one_device():
    # R and Q^T r up to row signs: R^T R = J^T J and R^T qtr = J^T r are sign-free
    import jax
    from jax.sharding import Mesh

    from jacopt.linalg import triangular_factor, tsqr_factor

    rng = np.random.default_rng(0)
    J, r = rng.standard_normal((37, 4)), rng.standard_normal(37)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    fixed, scale = np.array([False, True, False, False]), np.arange(1.0, 5.0)
    for pins in ((None, None), (fixed, scale)):
        R, qtr = (np.asarray(a) for a in tsqr_factor(J, r, mesh, "data", *pins))
        R0, qtr0 = (np.asarray(a) for a in triangular_factor(J, r, *pins))
        np.testing.assert_allclose(R.T @ R, R0.T @ R0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(R.T @ qtr, R0.T @ qtr0, rtol=1e-12, atol=1e-12)
        assert np.allclose(np.tril(R, -1), 0.0)
    R = np.asarray(tsqr_factor(J, r, mesh, "data")[0])  # against the normal equations too
    np.testing.assert_allclose(R.T @ R, J.T @ J, rtol=1e-12)


@pytest.mark.slow
def test_every_nist_problem_and_solver_sharded():
    fits = run_checks("nist", "--full")
    assert len(fits) == 27
    for key, fit in fits.items():
        # the stopping tests sit at rounding level, so which one fires first may differ
        assert fit["rel"] < TOL and fit["status"] in SUCCESS, (key, fit)
        assert fit["ref_status"] in SUCCESS, (key, fit)


@pytest.mark.slow
def test_sharded_fit_of_1e6_points_matches_one_device():
    fit = run_checks("large", "--m", "1000000")
    assert fit["padded_m"] == 1_000_000 and fit["dof"] == 1_000_000 - 4
    assert fit["rel"] < TOL and fit["status"] == fit["ref_status"]
    assert fit["pcov_rel"] < TOL and fit["scipy_rel"] < 1e-9


@pytest.mark.slow
def test_padded_curve_fit_covariance_on_2_4_8_devices(extra):
    assert_covariance_gathers_only_triangles(extra["covariance"], (2, 4, 8))
    fits = extra["covariance"]["fits"]
    for n, padded_m in (("2", 1002), ("4", 1004), ("8", 1008)):
        fit = fits[n]
        assert fit["padded_m"] == padded_m and fit["rows_split"] and fit["valid"], (n, fit)
        assert fit["dof"] == fit["ref_dof"] == 1001 - 4, (n, fit)
        assert fit["rel"] < TOL and fit["pcov_rel"] < TOL and fit["stderr_rel"] < TOL, (n, fit)
        assert fit["scipy_rel"] < 1e-9, (n, fit)


@pytest.mark.slow
def test_two_processes_give_the_one_process_parameters():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, JACOPT_CACHE="0", JAX_PLATFORMS="cpu")  # fake CPU devices
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, SCRIPT, "process", "--devices", "1", "--m",
                               "20000", "--port", port, "--process-id", str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
        line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
        outs.append(json.loads(line[len("RESULT "):]))
    for out in outs:
        assert out["devices"] == 2 and out["processes"] == 2 and out["status"] == "XTOL"
    ref = np.array(outs[0]["ref"])
    for out in outs:
        np.testing.assert_allclose(out["params"], ref, rtol=TOL)
