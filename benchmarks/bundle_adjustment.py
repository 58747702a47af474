"""Benchmark: bundle adjustment at the size of BAL's ``49-7776`` (49 cameras, 7,776 points,
31,104 observations; :func:`jacopt.problems.bundle_adjustment.bal_scene`), one problem and
one start for every method, float64, one thread each where it can be set.

Run: ``python -m jacopt.benchmarks.sparse --ba [--quick]`` (quick: 12 cameras, 1,000 points);
``--ba --sizes``: jacopt alone on scenes of 8, 20 and 49 cameras, for the growth of its compile
time with the problem's size.

Methods:

- ``jacopt lm-schur``: :func:`jacopt.least_squares` with ``solver="lm-schur"`` (the
  Schur-complement LM of :mod:`jacopt.solvers.schur_lm`) and the analytic pattern; at its
  default tolerances (full precision) and at ``ftol=1e-10``. ``detect_s``: the host work
  paid once per function and shapes (the pattern's colouring and check, the Schur
  structure); ``first_s`` the first call (compile included); ``run_s`` the median warm call.
- ``scipy trf+lsmr (cookbook)``: SciPy's cookbook method, ``least_squares(method="trf",
  jac_sparsity=pattern, tr_solver="lsmr", x_scale="jac", ftol=1e-4)``, finite differences
  grouped by the pattern; and the same with the exact sparse Jacobian (a CSR matrix from
  jacopt's compressed JVPs). SciPy calls the residual function as a jitted JAX function.
- ``ceres (pycolmap)``: Ceres through pycolmap's bundle adjuster on a ``pycolmap.Reconstruction``
  built from the same scene and start: SIMPLE_RADIAL cameras (focal length and ``k`` refined,
  principal point fixed: pycolmap's defaults), one single-camera rig per image, the poses of
  images 0 and 1 constant (the gauge of the problem module), ``num_threads = 1``, at
  pycolmap's default solver options and at tight tolerances (``function_tolerance =
  gradient_tolerance = parameter_tolerance = 1e-15``). Its cost is re-evaluated with
  jacopt's residual at the parameters Ceres returns (``final_loss``); ``solve_s`` is
  ``BundleAdjuster.solve()`` alone, ``setup_s`` the problem's construction. Skipped with a
  note when ``pycolmap`` cannot be imported (``pip install jacopt[bench]``).

``final_loss`` is ``0.5 ||r||^2`` (Ceres' and SciPy's cost); ``rel_to_ceres`` its relative
difference from Ceres' tight run; ``over_jacopt``: a method's ``run_s`` over jacopt
lm-schur's at default tolerances. The machine is shared: compare ratios measured in one run.
"""
from __future__ import annotations

import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jacopt.benchmarks._records import limit_blas_threads, time_calls, time_once

SUITE = "sparse"
_FIELDS = ("problem", "method", "detect_s", "first_s", "compile_s", "run_s", "setup_s",
           "final_loss", "rel_to_ceres", "steps", "nfev", "njev", "status", "note")


def _record(problem, method, **fields) -> dict:
    rec = {"suite": SUITE, "problem": problem, "method": method}
    rec.update({k: None for k in _FIELDS if k not in rec})
    rec.update(fields)
    return rec


def _cost(scene, params) -> float:
    from jacopt.problems.bundle_adjustment import residual

    r = np.asarray(residual(params, *scene.args))
    return 0.5 * float(np.sum(r * r))


def jacopt_records(scene, problem, progress=None) -> list[dict]:
    """lm-schur at its default tolerances and at ``ftol=1e-10``."""
    import jacopt
    from jacopt.problems.bundle_adjustment import residual
    from jacopt.solvers.schur_lm import structure_for
    from jacopt.solvers.sparse_lm import plan_for

    pattern = scene.jac_sparsity()

    def detect():
        plan = plan_for(residual, scene.x0, scene.args, pattern, "fwd")
        return structure_for(plan, "auto")

    structure, detect_s = time_once(detect)
    records = []
    for label, options in (("defaults", {}), ("ftol=1e-10", {"ftol": 1e-10})):
        if progress:
            progress(f"{problem} / jacopt lm-schur ({label})")

        def ours():
            return jacopt.least_squares(residual, scene.x0, args=scene.args,
                                        solver="lm-schur", jac_sparsity=pattern, **options)

        res, first_s = time_once(ours)
        res, run_s = time_calls(ours, repeats=3, warm_up=False, max_total_s=30.0)
        records.append(_record(
            problem, f"jacopt lm-schur ({label})", detect_s=detect_s, first_s=first_s,
            compile_s=max(first_s - run_s, 0.0), run_s=run_s, final_loss=float(res.cost),
            steps=int(res.num_steps), nfev=int(res.nfev), njev=int(res.njev),
            status=res.status_name, note=repr(structure)))
    return records


def scipy_records(scene, problem, progress=None) -> list[dict]:
    """SciPy's cookbook method (2-point differences grouped by the pattern) and the same with
    the exact sparse Jacobian."""
    import scipy.optimize as so
    import scipy.sparse as sps

    from jacopt.problems.bundle_adjustment import residual
    from jacopt.solvers.sparse_lm import jacobian_values, plan_for

    pattern = scene.jac_sparsity()
    flat0, unravel = ravel_pytree(scene.x0)
    args = scene.args
    fun_jax = jax.jit(lambda v: residual(unravel(v), *args).reshape(-1))

    def fun(v):
        return np.asarray(fun_jax(jnp.asarray(v)))

    plan = plan_for(residual, scene.x0, args, pattern, "fwd")

    class _Problem:  # what jacobian_values reads
        residual = staticmethod(lambda v, a: residual(unravel(v), *a).reshape(-1))

    _Problem.args = args
    values = jax.jit(lambda v: jacobian_values(_Problem, plan, v)[1])

    def jac(v):
        return sps.csr_array((np.asarray(values(jnp.asarray(v))), (plan.rows, plan.cols)),
                             shape=plan.shape)

    fun(np.asarray(flat0))
    jac(np.asarray(flat0))  # compiled before timing
    records = []
    cookbook = dict(method="trf", tr_solver="lsmr", x_scale="jac", ftol=1e-4)
    for label, kw in (("cookbook: 2-point, jac_sparsity", dict(jac_sparsity=pattern)),
                      ("exact sparse jac", dict(jac=jac))):
        if progress:
            progress(f"{problem} / scipy trf+lsmr ({label})")
        out, seconds = time_once(lambda: so.least_squares(fun, np.asarray(flat0), **cookbook,
                                                          **kw))
        records.append(_record(problem, f"scipy trf+lsmr ({label})", run_s=seconds,
                               final_loss=float(out.cost), nfev=int(out.nfev),
                               njev=None if out.njev is None else int(out.njev),
                               status=str(out.status)))
    return records


def _angle_axis(xyzw):
    """The angle-axis vector of a unit quaternion ``[x, y, z, w]``."""
    v, w = xyzw[:3], xyzw[3]
    if w < 0:
        v, w = -v, -w
    s = np.linalg.norm(v)
    return v * (2.0 * np.arctan2(s, w) / s) if s > 0 else 2.0 * v


def _reconstruction(scene, pycolmap):
    """The scene's start as a ``pycolmap.Reconstruction`` (image/camera/rig/frame ``i + 1``
    for camera ``i``) and a function reading the refined parameters back."""
    from jacopt.problems.bundle_adjustment import IMAGE_SIZE

    cams = np.asarray(scene.x0["cameras"])
    pts = np.asarray(scene.x0["points"])
    camera_index, point_index, obs, principal, _ = (np.asarray(a) for a in scene.args)
    rec = pycolmap.Reconstruction()
    keypoints = [[] for _ in range(cams.shape[0])]
    tracks = [[] for _ in range(pts.shape[0])]
    for i, (c, p) in enumerate(zip(camera_index, point_index)):
        tracks[p].append((c + 1, len(keypoints[c])))
        keypoints[c].append(obs[i])
    for c in range(cams.shape[0]):
        f, k = cams[c, 6], cams[c, 7]
        camera = pycolmap.Camera(model="SIMPLE_RADIAL", width=IMAGE_SIZE[0],
                                 height=IMAGE_SIZE[1],
                                 params=[f, principal[c, 0], principal[c, 1], k],
                                 camera_id=c + 1)
        rec.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=f"{c}", keypoints=np.asarray(keypoints[c]),
                               camera_id=c + 1, image_id=c + 1)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(cams[c, :3]), cams[c, 3:6])
        rec.add_image_with_trivial_frame(image, pose)
    for p in range(pts.shape[0]):
        track = pycolmap.Track()
        for image_id, idx in tracks[p]:
            track.add_element(image_id, idx)
        rec.add_point3D(pts[p], track)

    def params():
        out = cams.copy()
        for c in range(cams.shape[0]):
            pose = rec.image(c + 1).cam_from_world()
            out[c, :3] = _angle_axis(np.asarray(pose.rotation.quat).reshape(-1))
            out[c, 3:6] = np.asarray(pose.translation).reshape(-1)
            camera_params = np.asarray(rec.camera(c + 1).params)
            out[c, 6], out[c, 7] = camera_params[0], camera_params[3]
        xyz = np.stack([np.asarray(rec.point3D(i).xyz) for i in sorted(rec.point3D_ids())])
        return {"cameras": jnp.asarray(out), "points": jnp.asarray(xyz)}

    return rec, params


def ceres_records(scene, problem, progress=None) -> list[dict]:
    """Ceres via pycolmap's bundle adjuster at pycolmap's defaults and at tight tolerances;
    a single record with a note when pycolmap is absent."""
    try:
        import pycolmap
    except ImportError as exc:
        return [_record(problem, "ceres (pycolmap)", note=f"skipped: pycolmap is not "
                        f"importable ({exc}); pip install 'jacopt[bench]'")]
    from jacopt.problems.bundle_adjustment import FIXED_CAMERAS

    records = []
    for label, tol in (("pycolmap defaults", None), ("tolerances 1e-15", 1e-15)):
        if progress:
            progress(f"{problem} / ceres ({label})")
        times, setups = [], []
        for _ in range(3):
            rec, read_back = _reconstruction(scene, pycolmap)
            options = pycolmap.BundleAdjustmentOptions()
            options.refine_focal_length = True
            options.refine_principal_point = False
            options.refine_extra_params = True
            options.print_summary = False
            solver_options = options.ceres.solver_options
            solver_options.num_threads = 1
            if tol is not None:
                solver_options.function_tolerance = tol
                solver_options.gradient_tolerance = tol
                solver_options.parameter_tolerance = tol
                solver_options.max_num_iterations = 1000
            config = pycolmap.BundleAdjustmentConfig()
            for image_id in sorted(rec.reg_image_ids()):
                config.add_image(image_id)
            for c in range(FIXED_CAMERAS):
                config.set_constant_rig_from_world_pose(rec.image(c + 1).frame_id)
            adjuster, setup_s = time_once(
                lambda: pycolmap.create_default_bundle_adjuster(options, config, rec))
            summary, solve_s = time_once(adjuster.solve)
            times.append(solve_s)
            setups.append(setup_s)
        details = summary.todict().get("ceres_summary", {})
        steps = details.get("num_successful_steps", 0) + details.get("num_unsuccessful_steps", 0)
        records.append(_record(
            problem, f"ceres (pycolmap, {label})", run_s=float(np.median(times)),
            setup_s=float(np.median(setups)), final_loss=_cost(scene, read_back()),
            steps=steps, status=str(details.get("termination_type", "")).split(".")[-1],
            note=(f"{str(details.get('linear_solver_type_used', '')).split('.')[-1]}; Ceres' "
                  f"own costs: initial {details.get('initial_cost', float('nan')):.10e}, final "
                  f"{details.get('final_cost', float('nan')):.10e}; {details.get('message')}")))
    return records


def run_bundle_adjustment(quick: bool = False, seed: int = 0, scipy: bool = True,
                          progress: Callable | None = None) -> list[dict]:
    """The records of every method on one scene (module docstring)."""
    from jacopt.problems.bundle_adjustment import bal_scene, make_scene

    limit_blas_threads(1)
    jax.config.update("jax_enable_x64", True)
    scene = make_scene(12, 1000, 4, seed=seed) if quick else bal_scene(seed)
    problem = (f"bundle adjustment {scene.num_cameras} cameras / {scene.num_points} points / "
               f"{scene.num_observations} observations")
    start = _record(problem, "start", final_loss=_cost(scene, scene.x0))
    records = [start] + jacopt_records(scene, problem, progress)
    records += ceres_records(scene, problem, progress)
    if scipy:
        records += scipy_records(scene, problem, progress)
    ceres = [r for r in records if r["method"] == "ceres (pycolmap, tolerances 1e-15)"]
    ours = [r for r in records if r["method"] == "jacopt lm-schur (defaults)"][0]
    for rec in records:
        if ceres and rec["final_loss"] is not None:
            rec["rel_to_ceres"] = (rec["final_loss"] - ceres[0]["final_loss"]) / ceres[0][
                "final_loss"]
        if rec["run_s"] is not None and rec is not ours:
            rec["over_jacopt"] = rec["run_s"] / ours["run_s"]
    return records


def format_table(records: list[dict]) -> str:
    """An aligned text table of :func:`run_bundle_adjustment`'s records."""
    columns = [("method", "{}"), ("detect_s", "{:.2f}"), ("first_s", "{:.2f}"),
               ("setup_s", "{:.3f}"), ("run_s", "{:.3f}"), ("over_jacopt", "{:.2f}"),
               ("final_loss", "{:.10e}"), ("rel_to_ceres", "{:.1e}"), ("steps", "{}"),
               ("nfev", "{}"), ("status", "{}")]
    body = [["-" if r.get(k) is None else f.format(r[k]) for k, f in columns] for r in records]
    widths = [max(len(k), *(len(row[i]) for row in body)) for i, (k, _) in enumerate(columns)]
    lines = [records[0]["problem"],
             "  ".join(k.ljust(w) for (k, _), w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    for rec, row in zip(records, body):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
        if rec.get("note"):
            lines.append(f"    note: {rec['note']}")
    lines.append("run_s: jacopt's median warm call, Ceres' median solve(), SciPy's one call; "
                 "over_jacopt: run_s over jacopt lm-schur (defaults)'s; rel_to_ceres: the cost's "
                 "relative difference from Ceres at tolerances 1e-15")
    return "\n".join(lines)


FAMILY = ((8, 200), (20, 2000), (49, 7776))
"""(cameras, points) of the scenes ``--sizes`` compiles (track length 4)."""


def run_sizes(seed: int = 0, progress: Callable | None = None) -> list[dict]:
    """jacopt lm-schur's records on the scenes of :data:`FAMILY`: how its compile time
    (``compile_s``: first call less the warm call) grows with the problem's size."""
    from jacopt.problems.bundle_adjustment import make_scene

    limit_blas_threads(1)
    jax.config.update("jax_enable_x64", True)
    records = []
    for cameras, points in FAMILY:
        scene = make_scene(cameras, points, 4, seed=seed)
        records += jacopt_records(scene, f"{cameras} cameras / {points} points", progress)
    return records


def format_sizes(records: list[dict]) -> str:
    """One line per (scene, method) of :func:`run_sizes`, then each method's largest
    ``compile_s`` over its smallest."""
    lines = []
    for rec in records:
        lines.append(f"{rec['problem']:<26} {rec['method']:<32} compile_s {rec['compile_s']:.2f}"
                     f"  run_s {rec['run_s']:.3f}  steps {rec['steps']}")
    for method in dict.fromkeys(r["method"] for r in records):
        times = [r["compile_s"] for r in records if r["method"] == method]
        lines.append(f"{method}: compile grows {max(times) / min(times):.2f}x over the family")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--sizes" in argv:
        print(format_sizes(run_sizes(progress=lambda m: print(m, file=sys.stderr))))
        return 0
    records = run_bundle_adjustment(quick="--quick" in argv, scipy="--no-scipy" not in argv,
                                    progress=lambda m: print(m, file=sys.stderr))
    print(format_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
