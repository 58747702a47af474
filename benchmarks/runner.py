"""Run benchmark suites, write ``results.json`` and plots, and format the comparison table.

Each suite is a module of this package with ``run(quick=False, progress=None) -> list[dict]``;
``progress`` is a callable taking one short string ("problem / method") that the runner shows
as a progress line. Every record has at least the fields in :data:`REQUIRED_FIELDS`.

``results.json`` is a JSON list: first one header record (``"suite": "meta"``) describing the
machine, the versions and the command, then one record per (suite, problem, method).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Iterable

SUITES = {
    "nist": "NIST StRD nonlinear regression, 27 problems x 2 starts: LRE, steps, time (peers: "
    "SciPy, Optimistix, JAXopt)",
    "mlp": "MLP fitting: second-order (LM, GN) against optax SGD/Adam, time to target loss",
    "policy": "softmax policies: natural gradient, Newton, BFGS against vanilla policy "
    "gradient (optax)",
    "jacobians": "Jacobian core: auto/fwd/rev, batch_jacobian, elementwise_grad, chunked memory",
    "minimize": "BFGS, L-BFGS, Newton against SciPy, Optimistix and optax on classic functions",
    "batch": "10,000 small fits in one vmapped call against SciPy looping over them",
}
DEFAULT_SUITES = ("nist", "mlp", "policy")

REQUIRED_FIELDS = (
    "suite",
    "problem",
    "method",
    "order",
    "target_loss",
    "time_to_target_s",
    "iters_to_target",
    "final_loss",
    "compile_s",
    "run_s",
)


class Progress:
    """A one-line progress display on stderr: suite k/n, elapsed time, current item."""

    def __init__(self, suites: list[str], stream=None):
        self.suites = suites
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.index = 0
        self.count = 0

    def begin_suite(self, index: int):
        self.index, self.count = index, 0

    def __call__(self, message: str):
        self.count += 1
        suite = self.suites[self.index]
        done = "#" * self.index + "-" * (len(self.suites) - self.index)
        line = (
            f"[{done}] {suite} ({self.index + 1}/{len(self.suites)}) "
            f"{time.perf_counter() - self.start:6.1f}s  #{self.count} {message}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line[:150])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()


def machine_header(suites: Iterable[str], quick: bool) -> dict:
    """The header record: machine, versions, command."""
    import jax
    import numpy
    import scipy

    versions = {"python": platform.python_version(), "jax": jax.__version__,
                "numpy": numpy.__version__, "scipy": scipy.__version__}
    for name in ("jaxlib", "optax", "optimistix", "jaxopt"):
        try:  # the installed distribution's version (jaxopt has no __version__ attribute)
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # the suites skip that peer
            versions[name] = None
    from jacopt import __version__

    versions["jacopt"] = __version__
    return {
        "suite": "meta",
        "problem": None,
        "method": None,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax_backend": jax.default_backend(),
            "x64": bool(jax.config.jax_enable_x64),
        },
        "versions": versions,
        "suites": list(suites),
        "quick": quick,
        "command": " ".join(["jacopt"] + sys.argv[1:]) if sys.argv else "jacopt",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_suites(suites: list[str], *, quick: bool, progress: Callable[[str], None] | None = None,
               on_suite: Callable[[int], None] | None = None) -> list[dict]:
    """Run the named suites in order; return the header record followed by every record.

    A suite whose module fails to import or raises is reported as one record with an
    ``error`` field (and a note on stderr) rather than stopping the other suites.
    """
    from jacopt.benchmarks._records import limit_blas_threads

    records = [machine_header(suites, quick)]
    # One BLAS thread for every suite and peer alike (see limit_blas_threads for why).
    records[0]["machine"]["blas_threads_pinned_to_1"] = bool(limit_blas_threads(1))
    for index, suite in enumerate(suites):
        if on_suite is not None:
            on_suite(index)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"jacopt.benchmarks.{suite}")
            suite_records = module.run(quick=quick, progress=progress)
        except Exception as exc:  # a broken suite must not hide the others' results
            print(f"\nsuite {suite!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            suite_records = [_error_record(suite, exc)]
        for rec in suite_records:
            rec.setdefault("suite", suite)
        records.extend(suite_records)
        records[0].setdefault("suite_seconds", {})[suite] = round(time.perf_counter() - started, 3)
    return records


def _error_record(suite: str, exc: Exception) -> dict:
    rec = {field: None for field in REQUIRED_FIELDS}
    rec.update(suite=suite, problem="*", method="*", order=None,
               error=f"{type(exc).__name__}: {exc}")
    return rec


def missing_fields(record: dict) -> list[str]:
    """The required fields a (non-header) record lacks."""
    return [f for f in REQUIRED_FIELDS if f not in record]


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / jax scalars
        return _jsonable(value.item())
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return value


def write_results(records: list[dict], out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    with open(path, "w") as fh:
        json.dump(_jsonable(records), fh, indent=1)
    return path


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------

def write_plots(records: list[dict], out_dir: str) -> list[str]:
    """PNG plots: loss against wall time and against iterations (one curve per method) for each
    problem whose records carry a ``curve``; LRE per NIST run for each solver. Returns paths;
    returns [] with a note on stderr when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plots written "
              "(pip install -e \".[dev]\" installs it)", file=sys.stderr)
        return []
    plot_dir = os.path.join(out_dir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    paths = []
    by_problem: dict[tuple, list[dict]] = {}
    for rec in records[1:]:
        if isinstance(rec.get("curve"), dict) and rec["curve"].get("loss"):
            by_problem.setdefault((rec["suite"], rec["problem"]), []).append(rec)
    for (suite, problem), recs in by_problem.items():
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for rec in recs:
            curve = rec["curve"]
            loss = [_positive(v) for v in curve["loss"]]
            style = "-" if rec.get("order") == "second" else "--"
            label = f"{rec['method']} ({rec.get('order', '?')})"
            if curve.get("time_s"):
                axes[0].plot(curve["time_s"], loss, style, label=label)
            if curve.get("iters"):
                axes[1].plot(curve["iters"], loss, style, label=label)
        target = recs[0].get("target_loss")
        for ax, xlabel in zip(axes, ("wall time after compile [s]", "iterations")):
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("loss")
            if isinstance(target, (int, float)) and target > 0:
                ax.axhline(target, color="grey", lw=0.8, ls=":", label="target")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_xscale("log")
        axes[1].set_xscale("log")
        axes[1].legend(fontsize=7)
        fig.suptitle(f"{suite}: {problem}")
        fig.tight_layout()
        path = os.path.join(plot_dir, f"{suite}-{_slug(problem)}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    nist = [r for r in records[1:] if r.get("suite") == "nist" and r.get("lre") is not None]
    if nist:
        runs = sorted({r["problem"] for r in nist}, key=lambda p: [x["problem"] for x in nist].index(p))
        methods = sorted({r["method"] for r in nist}, key=lambda m: [x["method"] for x in nist].index(m))
        fig, ax = plt.subplots(figsize=(max(10, 0.22 * len(runs)), 4.5))
        width = 0.8 / max(1, len(methods))
        for j, method in enumerate(methods):
            lre = {r["problem"]: r["lre"] for r in nist if r["method"] == method}
            xs = [i + j * width for i in range(len(runs))]
            ax.bar(xs, [lre.get(p) or 0.0 for p in runs], width, label=method)
        ax.axhline(6, color="grey", lw=0.8, ls=":")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(runs))])
        ax.set_xticklabels(runs, rotation=90, fontsize=6)
        ax.set_ylabel("LRE (correct digits, worst parameter)")
        ax.set_ylim(0, 11.5)
        ax.legend(fontsize=7, ncol=min(4, len(methods)))
        ax.set_title("NIST StRD: LRE per run")
        fig.tight_layout()
        path = os.path.join(plot_dir, "nist-lre.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _positive(v):
    if v is None:
        return float("nan")
    return max(float(v), 1e-300)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text)).strip("-")


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------

_COLUMNS = (
    ("suite", "suite", "{}"),
    ("problem", "problem", "{}"),
    ("method", "method", "{}"),
    ("order", "order", "{}"),
    ("final_loss", "final loss", "{:.3e}"),
    ("target_loss", "target", "{:.1e}"),
    ("iters_to_target", "iters to target", "{}"),
    ("time_to_target_s", "time to target [s]", "{:.4f}"),
    ("lre", "LRE", "{:.1f}"),
    ("compile_s", "compile [s]", "{:.3f}"),
    ("run_s", "run [s]", "{:.4f}"),
)


def _cell(value, fmt):
    if value is None:
        return "—"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(records: list[dict], fmt: str = "table") -> str:
    """The comparison as ``table`` (aligned text), ``markdown`` or ``json``."""
    body = [r for r in records if r.get("suite") != "meta"]
    if fmt == "json":
        return json.dumps(_jsonable(records), indent=1)
    cols = [c for c in _COLUMNS if any(r.get(c[0]) is not None for r in body)] or list(_COLUMNS[:3])
    rows = [[_cell(r.get(key), f) for key, _, f in cols] for r in body]
    heads = [h for _, h, _ in cols]
    lines = []
    if fmt == "markdown":
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("|" + "|".join(" --- " for _ in heads) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
                  for i, h in enumerate(heads)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(heads, widths)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    summary = comparison_summary(body)
    if summary:
        lines.append("")
        lines += summary
    return "\n".join(lines)


def comparison_summary(records: list[dict]) -> list[str]:
    """One line per problem: the best second-order against the best first-order method, by
    wall time to the target loss (records from suites that have both orders)."""
    out = []
    problems: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("order") in ("first", "second") and r.get("error") is None:
            problems.setdefault((r["suite"], r["problem"]), []).append(r)
    for (suite, problem), recs in problems.items():
        best = {}
        for order in ("first", "second"):
            reached = [r for r in recs if r["order"] == order and r.get("time_to_target_s") is not None]
            if reached:
                best[order] = min(reached, key=lambda r: r["time_to_target_s"])
        have_both = {r["order"] for r in recs} >= {"first", "second"}
        if not have_both:
            continue
        if "second" in best and "first" in best:
            s, f = best["second"], best["first"]
            ratio = f["time_to_target_s"] / max(s["time_to_target_s"], 1e-12)
            if ratio >= 1:
                out.append(f"{suite}/{problem}: {s['method']} reached the target in "
                           f"{s['time_to_target_s']:.4g} s, {ratio:.1f}x sooner than the best "
                           f"first-order method ({f['method']}, {f['time_to_target_s']:.4g} s)")
            else:
                out.append(f"{suite}/{problem}: first-order {f['method']} reached the target in "
                           f"{f['time_to_target_s']:.4g} s, {1 / ratio:.1f}x sooner than the "
                           f"best second-order method ({s['method']}, "
                           f"{s['time_to_target_s']:.4g} s)")
        elif "second" in best:
            s = best["second"]
            out.append(f"{suite}/{problem}: {s['method']} reached the target in "
                       f"{s['time_to_target_s']:.4g} s; no first-order method reached it")
        elif "first" in best:
            f = best["first"]
            out.append(f"{suite}/{problem}: only first-order {f['method']} reached the target "
                       f"({f['time_to_target_s']:.4g} s)")
        else:
            out.append(f"{suite}/{problem}: no method reached the target")
    nist = [r for r in records if r.get("suite") == "nist" and r.get("lre") is not None]
    for method in dict.fromkeys(r["method"] for r in nist):
        lres = [float(r["lre"]) for r in nist if r["method"] == method]
        ge6 = sum(v >= 6 for v in lres)
        out.append(f"nist/{method}: {ge6}/{len(lres)} runs with LRE >= 6, mean LRE "
                   f"{sum(lres) / len(lres):.2f}")
    return out
