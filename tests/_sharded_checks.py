"""Checks of fits whose data are split over several (fake CPU) devices, run in a fresh process by
tests/test_sharded.py: ``XLA_FLAGS`` must name the device count before JAX is imported, and the
rest of the test suite keeps one device.

``python tests/_sharded_checks.py PART [--devices 8] [--m M] [--full]`` prints one JSON object.
Parts: ``default`` (the default suite's selection of the others, in one process), ``extra``
(the slow suite's: the others with ``--full``, in one process), ``nist`` (parameters of padded,
sharded NIST fits against the single-device fits; ``--full``: every problem and solver),
``large`` (a synthetic curve_fit of ``--m`` points, padded and split), ``compiled``
(per-device temporary bytes and the collectives of the compiled solve; 1 and 8 devices,
``--full``: also 2 and 4), ``edges`` (NaN in one shard; ``--full``: also a residual count
that does not divide, bounds, an Explicit mesh, a sharded vmapped batch), ``covariance``
(curve_fit's covariance of a row-split Jacobian: values, collectives, memory on 1, 2 and 8
devices; ``--full``: also 4, and padded curve_fits split 2, 4 and 8 ways), ``process`` (one
process of a multi-process run under ``jax.distributed``).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys


def _setup(devices: int):
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}"
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def _rel(a, b):
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _mesh(jax, n):
    import numpy as np
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()[:n]), ("data",))


@functools.lru_cache(maxsize=None)
def _masked(residual):
    """``mask * residual(b, x, y)``: padded rows (mask 0) contribute nothing. One function per
    residual, so that fits of the same shapes reuse one compiled solve."""
    def fun(b, x, y, mask):
        return mask * residual(b, x, y)
    return fun


def nist_part(jax, args):
    import numpy as np

    import jacopt
    from jacopt.problems import nist

    out = {}
    if args.full:
        grid = [(name, solver, (2, 4, 8)) for name in ("Misra1a", "Thurber", "MGH09")
                for solver in ("lm", "gn", "dogleg")]
    else:  # 14 points: split 2 ways as they are, padded to 16 for 8
        grid = [("Misra1a", "lm", (2, 8))]
    for name, solver, counts in grid:
        p = nist.load(name)
        x, y = np.asarray(p.args[0]), np.asarray(p.args[1])
        fun = _masked(p.residual)
        start = np.asarray(p.starts[1])
        ref = jacopt.least_squares(fun, start, args=(x, y, np.ones_like(y)), solver=solver)
        for n in counts:
            xs, ys, mask = jacopt_shard_rows(_mesh(jax, n), x, y, fill=(x[-1], 0.0))
            got = jacopt.least_squares(fun, start, args=(xs, ys, mask), solver=solver)
            out[f"{name}/{solver}/{n}"] = {
                "rel": _rel(got.params, ref.params), "status": got.status_name,
                "ref_status": ref.status_name, "padded_m": int(ys.shape[0]),
                "replicated": bool(got.params.sharding.is_fully_replicated),
                "cost_rel": _rel(got.cost, ref.cost)}
    return out


def jacopt_shard_rows(mesh, *arrays, fill=0.0):
    from jacopt._sharding import shard_rows

    return shard_rows(mesh, "data", *arrays, fill=fill)


def _synthetic(m, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, m)
    y = 3.0 * np.exp(-0.4 * t) * np.cos(1.3 * t) + 0.5 + 0.01 * rng.standard_normal(m)
    return t, y


def _model(t, b):
    import jax.numpy as jnp

    return b[0] * jnp.exp(-b[1] * t) * jnp.cos(b[2] * t) + b[3]


def large_part(jax, args):
    """A synthetic curve_fit of ``--m`` points padded by ``shard_rows`` to a multiple of
    ``--devices`` and split over them, against the unpadded fit on one device (parameters,
    covariance, degrees of freedom) and SciPy's covariance."""
    import numpy as np

    import jacopt

    t, y = _synthetic(args.m)
    p0 = np.array([2.0, 0.3, 1.2, 0.0])
    ref = jacopt.curve_fit(_model, t, y, p0)
    got, padded_m = _padded_curve_fit(jax, t, y, p0, args.devices)
    _, scipy_pcov = _scipy_fit(t, y, p0)
    return {**_fit_record(got, ref, scipy_pcov, padded_m), "m": args.m,
            "devices": args.devices}


def _model_jac(t, *b):
    """The analytic Jacobian of :func:`_model` (NumPy), for SciPy's ``curve_fit``: its default
    finite differences would leave SciPy's covariance 1e-7 off the exact one."""
    import numpy as np

    e, c, s = np.exp(-b[1] * t), np.cos(b[2] * t), np.sin(b[2] * t)
    return np.stack([e * c, -t * b[0] * e * c, -t * b[0] * e * s, np.ones_like(t)], axis=1)


def _scipy_fit(t, y, p0):
    import numpy as np
    import scipy.optimize

    return scipy.optimize.curve_fit(lambda t, *b: np.asarray(_model(t, np.array(b))), t, y,
                                    p0=p0, jac=_model_jac, ftol=1e-15, xtol=1e-15, gtol=1e-15)


def _padded_curve_fit(jax, t, y, p0, n_devices):
    """curve_fit of ``(t, y)`` padded by ``shard_rows`` and split over ``n_devices``, the mask
    passed as ``mask=`` so that ``m`` (degrees of freedom) counts the real points only."""
    import jacopt

    ts, ys, mask = jacopt_shard_rows(_mesh(jax, n_devices), t, y, fill=(t[-1], 0.0))
    return jacopt.curve_fit(_model, ts, ys, p0, mask=mask), int(ys.shape[0])


def _fit_record(got, ref, scipy_pcov, padded_m):
    import importlib

    rows_of = importlib.import_module("jacopt._sharding").rows_of
    return {"rel": _rel(got.params, ref.params), "pcov_rel": _rel(got.pcov, ref.pcov),
            "scipy_rel": _rel(got.pcov, scipy_pcov), "stderr_rel": _rel(got.stderr, ref.stderr),
            "status": got.result.status_name, "ref_status": ref.result.status_name,
            "dof": int(got.dof), "ref_dof": int(ref.dof), "valid": bool(got.covariance_valid),
            "padded_m": padded_m, "rows_split": rows_of(got.result.jac) is not None}


def covariance_part(jax, args):
    """The compiled covariance of a ``65533 x 4`` Jacobian padded with 3 zero rows (``m =
    65533`` passed, as curve_fit's ``mask`` gives it) and split 2, 4 and 8 ways, against the
    exact ``(J^T J)^{-1} 2 cost / (m - n)``: its collectives (no gather of the rows, a TSQR)
    and per-device scratch bytes. ``--full``: also curve_fit with ``m = 1001`` points padded
    and split 2, 4 and 8 ways against the unpadded fit on one device and SciPy's."""
    import importlib

    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import jacopt

    cf = importlib.import_module("jacopt.curve_fit")
    m, padded = 65533, 65536
    J = np.random.default_rng(4).standard_normal((m, 4)) + np.array([0.0, 1.0, 2.0, 3.0])
    _, sv, vt = np.linalg.svd(J, full_matrices=False)  # (J^T J)^{-1} = V S^-2 V^T
    exact = (vt.T / sv**2) @ vt * 2 * 1.5 / (m - 4)
    J = np.concatenate([J, np.zeros((padded - m, 4))])
    covariance = jax.jit(cf._covariance.__wrapped__, static_argnames=("absolute_sigma", "rows"))
    out = {"m": m, "padded_m": padded, "pcov_rel": {}, "dof_rel": {}, "collectives": {},
           "temp_bytes": {}, "one_device_rel": {}}
    pcovs = {}
    for n in (1, 2, 4, 8) if args.full else (1, 2, 8):
        place = NamedSharding(_mesh(jax, n), PartitionSpec("data")) if n > 1 else jax.devices()[0]
        Jn = jax.device_put(J, place)
        rows = cf.rows_of(Jn)
        assert (rows is None) == (n == 1), rows
        compiled = covariance.lower(Jn, 1.5, absolute_sigma=False, m=m, rows=rows).compile()
        pcov, _, rank, valid, variance, _ = compiled(Jn, 1.5, m=m)
        assert bool(valid) and int(rank) == 4
        pcovs[n] = pcov
        out["pcov_rel"][n] = _rel(pcov, exact)
        out["one_device_rel"][n] = _rel(pcov, pcovs[1])
        out["dof_rel"][n] = _rel(variance, 2 * 1.5 / (m - 4))
        out["collectives"][n] = collectives(compiled.as_text())
        out["temp_bytes"][n] = compiled.memory_analysis().temp_size_in_bytes
    if args.full:
        t, y = _synthetic(1001, seed=3)
        p0 = np.array([2.0, 0.3, 1.2, 0.0])
        ref = jacopt.curve_fit(_model, t, y, p0)
        _, scipy_pcov = _scipy_fit(t, y, p0)
        out["fits"] = {}
        for n in (2, 4, 8):
            got, padded_m = _padded_curve_fit(jax, t, y, p0, n)
            out["fits"][n] = _fit_record(got, ref, scipy_pcov, padded_m)
    return out


def _compiled_solve(jax, m, n_devices):
    """The compiled solve (LM, no implicit derivatives) of the synthetic fit with ``m``
    residuals split over ``n_devices`` (one device: unsplit)."""
    import functools
    import importlib

    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from jacopt._sharding import row_sharding
    from jacopt.losses import get_loss
    from jacopt.solvers import LevenbergMarquardt

    ls = importlib.import_module("jacopt.least_squares")
    t, y = _synthetic(m)
    if n_devices > 1:
        place = NamedSharding(_mesh(jax, n_devices), PartitionSpec("data"))
    else:
        place = jax.devices()[0]
    rows, data = row_sharding((jax.device_put(t, place), jax.device_put(y, place)))

    def residual(b, t, y):
        return y - _model(t, b)

    solve = jax.jit(functools.partial(
        ls._solve_impl, solver=LevenbergMarquardt(), fun=residual, jac=None,
        loss=get_loss("linear"), max_steps=100, history=False, verbose=0, implicit_diff=False,
        batched=False, rows=rows))
    p0 = np.array([2.0, 0.3, 1.2, 0.0])
    return solve.lower(p0, data, None, None, None, 1.0).compile()


COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(hlo: str) -> list:
    """``(op, result shape, in the loop body)`` for every collective instruction of ``hlo``."""
    import re

    found = []
    pattern = re.compile(r"= (.+?) (%s)(?:-start)?\(" % "|".join(COLLECTIVES))
    for line in hlo.splitlines():
        match = pattern.search(line)
        if match:
            found.append([match.group(2), match.group(1), "while/body" in line])
    return found


def compiled_part(jax, args):
    out = {"temp_bytes": {}, "collectives": {}}
    for n in (1, 2, 4, 8) if args.full else (1, 8):
        compiled = _compiled_solve(jax, 65536, n)
        out["temp_bytes"][n] = compiled.memory_analysis().temp_size_in_bytes
        if n == 8:
            out["collectives"]["65536"] = collectives(compiled.as_text())
    out["collectives"]["8192"] = collectives(_compiled_solve(jax, 8192, 8).as_text())
    return out


def edges_part(jax, args):
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import jacopt
    from jacopt.problems import nist

    out = {}
    p = nist.load("Misra1a")
    x, y = np.asarray(p.args[0]), np.asarray(p.args[1])
    fun = _masked(p.residual)
    start = np.asarray(p.starts[1])
    mesh = _mesh(jax, 8)

    # a NaN in one shard (the last device's rows)
    bad = y.copy()
    bad[13] = np.nan
    xs, ys, mask = jacopt_shard_rows(mesh, x, bad, fill=(x[-1], 0.0))
    got = jacopt.least_squares(fun, start, args=(xs, ys, mask))
    out["nan"] = {"status": got.status_name, "shard": int(13 // (ys.shape[0] // 8))}
    if not args.full:  # the NaN fit reuses nist's compiled Misra1a/lm/8 solve
        return out

    # JAX refuses to place rows that the mesh axis does not divide
    try:
        jax.device_put(y, NamedSharding(mesh, PartitionSpec("data")))
        out["uneven_device_put"] = "placed"
    except ValueError as exc:
        out["uneven_device_put"] = str(exc)

    # residuals whose count the device count does not divide (a prior term appended to the
    # sharded rows): TSQR pads with zero rows
    def with_prior(b, x, y, mask):
        return jnp.concatenate([mask * p.residual(b, x, y), 0.1 * (b[:1] - 240.0)])

    xs, ys, mask = jacopt_shard_rows(mesh, x, y, fill=(x[-1], 0.0))
    ref = jacopt.least_squares(with_prior, start, args=(x, y, np.ones_like(y)))
    got = jacopt.least_squares(with_prior, start, args=(xs, ys, mask))
    out["odd_m"] = {"rel": _rel(got.params, ref.params), "status": got.status_name,
                    "m": int(got.residuals.shape[0])}

    # bounds that bind: the pins join the stacked R factors
    bounds, inside = ([0.0, 0.0], [200.0, 1.0]), np.array([150.0, 5e-4])
    ref = jacopt.least_squares(fun, inside, args=(x, y, np.ones_like(y)), bounds=bounds)
    got = jacopt.least_squares(fun, inside, args=(xs, ys, mask), bounds=bounds)
    out["bounded"] = {"rel": _rel(got.params, ref.params), "status": got.status_name,
                      "params": np.asarray(got.params).tolist()}

    # an Explicit-axis mesh (jax.make_mesh's default)
    explicit = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    xe, ye, me = jacopt_shard_rows(explicit, x, y, fill=(x[-1], 0.0))
    ref = jacopt.least_squares(fun, start, args=(x, y, np.ones_like(y)))
    got = jacopt.least_squares(fun, start, args=(xe, ye, me))
    out["explicit_mesh"] = {"rel": _rel(got.params, ref.params), "status": got.status_name}

    out["batch"] = _batch(jax, mesh)
    return out


def _batch(jax, mesh):
    """A vmapped batch whose batch axis is split over the devices, against the same batch on
    one device, and the collectives inside its compiled loop."""
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from jacopt.benchmarks import batch

    data = batch.make_batch(64, seed=5)
    solve = jax.jit(batch.batched_solver("lm"))
    ref = solve(data.x, data.ydata, data.starts)
    rows = NamedSharding(mesh, PartitionSpec("data"))
    ydata, starts = jax.device_put(data.ydata, rows), jax.device_put(data.starts, rows)
    compiled = solve.lower(data.x, ydata, starts).compile()
    got = compiled(data.x, ydata, starts)
    hlo = compiled.as_text()
    return {"rel": _rel(got.params, ref.params),
            "success": int(np.sum(np.asarray(got.success))),
            "params_spec": str(got.params.sharding.spec),
            "collectives": collectives(hlo)}


def process_part(jax, args):
    """One of ``--num-processes`` processes on localhost (``--process-id``, coordinator at
    ``--port``): a synthetic fit whose rows are split over every process's device, through
    ``jax.distributed`` with gloo CPU collectives."""
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import jacopt

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{args.port}",
                               num_processes=args.num_processes, process_id=args.process_id)
    t, y = _synthetic(args.m)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, PartitionSpec("data"))

    def place(a):
        return jax.make_array_from_callback(a.shape, rows, lambda index: a[index])

    p0 = np.array([2.0, 0.3, 1.2, 0.0])

    def residual(b, t, y):
        return y - _model(t, b)

    got = jacopt.least_squares(residual, p0, args=(place(t), place(y)))
    params = np.asarray(got.params.addressable_data(0))
    out = {"params": params.tolist(), "status": str(got.status_name),
           "devices": jax.device_count(), "processes": jax.process_count()}
    if args.process_id == 0:
        ref = jacopt.least_squares(residual, p0, args=(t, y))  # on this process's device
        out["ref"] = np.asarray(ref.params.addressable_data(0)).tolist()
    jax.distributed.shutdown()
    return out


def default_part(jax, args):
    """The default suite's checks in one process, each part's small selection (no
    ``--full``): Misra1a split 2 and 8 ways, the padded 10^5-point curve_fit, the compiled
    solve on 1 and 8 devices, a NaN in one shard, curve_fit's covariance. ``seconds``: the
    wall time of each part."""
    import time

    out, seconds = {}, {}
    for name in ("nist", "large", "compiled", "edges", "covariance"):
        started = time.perf_counter()
        out[name] = PARTS[name](jax, args)
        seconds[name] = round(time.perf_counter() - started, 2)
    return {**out, "seconds": seconds}


def extra_part(jax, args):
    """The slow suite's checks in one process (``--full`` implied): every edge case, the
    compiled solve on 1, 2, 4 and 8 devices, padded curve_fits split 2, 4 and 8 ways."""
    args.full = True
    return {"edges": edges_part(jax, args), "compiled": compiled_part(jax, args),
            "covariance": covariance_part(jax, args)}


PARTS = {"default": default_part, "extra": extra_part, "nist": nist_part, "large": large_part,
         "compiled": compiled_part, "edges": edges_part, "covariance": covariance_part,
         "process": process_part}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--m", type=int, default=99_997)
    parser.add_argument("--full", action="store_true",
                        help="every case of a part (nist: every problem and solver)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args(argv)
    jax = _setup(args.devices)
    result = PARTS[args.part](jax, args)
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
