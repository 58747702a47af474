"""One check of jacopt on whatever devices this machine has (a GPU machine when one is lent):
the devices, a selection of device-agnostic tests, the NIST suite, the batch benchmark at 10^4
and 10^5 fits, and a fit whose data are split over every local device. Writes one JSON record.

Run: ``python benchmarks/device_check.py --out record.json`` (meant to finish within 8 minutes
on one GPU: the tests and the NIST stage, the suite's ``--quick`` selection unless
``--nist-full``, are cut off at 4 and 3 minutes); ``--quick`` shrinks the other stages so that the
script can be checked on a CPU in a few minutes.
Each stage records its wall time, its output's tail and whether it passed; a failing stage does
not stop the others. The sharded fit is a synthetic damped-cosine ``curve_fit`` of ``--m``
points (10^6; quick 10^5) split over all local devices, against the same fit on one device:
the record holds both warm times (median of 3) and the largest relative parameter difference.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = ["tests/test_least_squares_contract.py", "tests/test_batch_fits.py",
         "tests/test_sharded.py"]
QUICK_TESTS = ["tests/test_batch_fits.py"]


def _tail(text: str, size: int = 2000) -> str:
    return text[-size:]


def _run(command, timeout):
    """``(passed, seconds, output tail)`` of a subprocess run from the repository root."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        passed, output = done.returncode == 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        passed, output = False, f"timed out after {timeout} s: {exc.stdout or ''}"
    return passed, time.perf_counter() - started, _tail(output if isinstance(output, str)
                                                        else output.decode())


def devices() -> dict:
    import jax

    return {"backend": jax.default_backend(), "jax": jax.__version__,
            "device_count": jax.device_count(), "process_count": jax.process_count(),
            "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "python": platform.python_version(),
            "machine": platform.node(), "xla_flags": os.environ.get("XLA_FLAGS", "")}


def tests_stage(quick: bool, timeout: int) -> dict:
    selection = QUICK_TESTS if quick else TESTS
    passed, seconds, tail = _run([sys.executable, "-m", "pytest", *selection, "-x", "-q",
                                  "-p", "no:cacheprovider"], timeout)
    return {"selection": selection, "passed": passed, "seconds": seconds, "output": tail}


def nist_stage(full: bool, out_dir: str, timeout: int) -> dict:
    folder = os.path.join(out_dir, "nist")
    command = [sys.executable, "-m", "jacopt.benchmarks.nist", "--out", folder, "--no-plots",
               "--format", "table"] + ([] if full else ["--quick"])
    passed, seconds, tail = _run(command, timeout)
    return {"command": " ".join(command[1:]), "passed": passed, "seconds": seconds,
            "output": tail}


def batch_stage(num_fits: int, scipy_fits: int) -> dict:
    from jacopt.benchmarks import batch

    started = time.perf_counter()
    records = batch.run(num_fits=num_fits, scipy_fits=scipy_fits, repeats=3)
    jac = records[0]
    keep = ("num_fits", "compile_s", "run_s", "per_fit_s", "status_counts", "num_success",
            "median_steps", "max_steps_taken")
    out = {k: jac[k] for k in keep}
    out["scipy_per_fit_s"] = records[-1]["per_fit_s"]
    out["max_rel_param_diff_vs_scipy_tight"] = records[-1]["max_rel_param_diff"]
    out["speedup_vs_scipy_tight"] = records[-1]["speedup"]
    out["seconds"] = time.perf_counter() - started
    out["passed"] = jac["num_success"] >= 0.99 * num_fits
    return out


def sharded_stage(m: int) -> dict:
    """A ``curve_fit`` of ``m`` points split over every local device against one device."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import jacopt
    from jacopt.benchmarks._records import time_calls

    started = time.perf_counter()
    count = jax.device_count()
    m = m - m % count
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 10.0, m)
    y = 3.0 * np.exp(-0.4 * t) * np.cos(1.3 * t) + 0.5 + 0.01 * rng.standard_normal(m)
    p0 = np.array([2.0, 0.3, 1.2, 0.0])

    def model(t, b):
        return b[0] * jnp.exp(-b[1] * t) * jnp.cos(b[2] * t) + b[3]

    one = jax.devices()[0]
    t1, y1 = jax.device_put(t, one), jax.device_put(y, one)
    rows = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
    ts, ys = jax.device_put(t, rows), jax.device_put(y, rows)
    ref = jacopt.curve_fit(model, t1, y1, p0)
    got = jacopt.curve_fit(model, ts, ys, p0)
    a, b = np.asarray(got.params), np.asarray(ref.params)
    out = {"m": m, "devices": count,
           "single_s": time_calls(lambda: jacopt.curve_fit(model, t1, y1, p0).params)[1],
           "sharded_s": time_calls(lambda: jacopt.curve_fit(model, ts, ys, p0).params)[1],
           "max_rel_param_diff": float(np.max(np.abs(a - b) / np.abs(b))),
           "status": str(got.result.status_name), "ref_status": str(ref.result.status_name)}
    out["ratio"] = out["sharded_s"] / out["single_s"]
    out["passed"] = out["max_rel_param_diff"] < 1e-10 and out["status"] == out["ref_status"]
    out["seconds"] = time.perf_counter() - started
    return out


def _guarded(record: dict, name: str, stage, *args):
    print(f"[device_check] {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        record[name] = stage(*args)
    except Exception as exc:  # a failing stage is recorded; the others still run
        record[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}",
                        "seconds": time.perf_counter() - started}
    print(f"[device_check] {name}: passed={record[name].get('passed')} "
          f"({record[name].get('seconds', 0):.1f} s)", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/device_check.py",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="path of the JSON record to write")
    parser.add_argument("--quick", action="store_true",
                        help="small stages (a CPU check of this script)")
    parser.add_argument("--m", type=int, default=None,
                        help="points of the sharded fit (default 10^6; quick 10^5)")
    parser.add_argument("--nist-full", action="store_true",
                        help="all 27 NIST problems (default: the suite's --quick selection, "
                        "which keeps the whole check under 8 minutes)")
    parser.add_argument("--skip", default="", help="comma-separated stages to skip: "
                        "tests,nist,batch,sharded")
    options = parser.parse_args(argv)
    skip = set(filter(None, options.skip.split(",")))
    os.environ.setdefault("JACOPT_CACHE", "0")

    import jax

    jax.config.update("jax_enable_x64", True)
    started = time.perf_counter()
    record = {"command": " ".join(["python benchmarks/device_check.py"]
                                  + list(sys.argv[1:] if argv is None else argv)),
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "devices": devices()}
    print(json.dumps(record["devices"], indent=1), flush=True)
    out_dir = os.path.dirname(os.path.abspath(options.out))
    if "tests" not in skip:
        _guarded(record, "tests", tests_stage, options.quick, 240)
    if "nist" not in skip:
        _guarded(record, "nist", nist_stage, options.nist_full, out_dir,
                 600 if options.nist_full else 180)
    if "batch" not in skip:
        sizes = (200, 1_000) if options.quick else (10_000, 100_000)
        for size in sizes:
            _guarded(record, f"batch_{size}", batch_stage, size, 10 if options.quick else 50)
    if "sharded" not in skip:
        _guarded(record, "sharded", sharded_stage,
                 options.m or (100_000 if options.quick else 1_000_000))
    record["seconds"] = time.perf_counter() - started
    record["passed"] = all(v.get("passed", True) for v in record.values()
                           if isinstance(v, dict) and "passed" in v)
    with open(options.out, "w") as f:
        json.dump(record, f, indent=1)
    summary = {k: {"passed": v.get("passed"), "seconds": round(v.get("seconds", 0), 1)}
               for k, v in record.items() if isinstance(v, dict) and "passed" in v}
    print(json.dumps(summary, indent=1))
    print(f"wrote {options.out} ({record['seconds']:.0f} s, passed={record['passed']})")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
