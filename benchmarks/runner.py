"""Run benchmark suites, write ``results.json`` and plots, and format the comparison table.

Each suite is a module of this package with ``run(quick=False, progress=None) -> list[dict]``,
registered in :data:`SUITES`; ``progress`` is a callable taking one short string ("problem /
method") that the runner shows as a progress line, counted within the suite ("nist 12/54")
when the suite announces its item count with :func:`jacopt.benchmarks._records.expect`. Every
record has at least the fields in :data:`REQUIRED_FIELDS`; a record with a ``note`` and no
measurement is a skipped run, and the table says why.

``results.json`` is a JSON list: first one header record (``"suite": "meta"``) describing the
machine, the versions and the command, then one record per (suite, problem, method).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Iterable


@dataclasses.dataclass(frozen=True)
class Suite:
    """A registered suite: what it measures, whether ``jacopt bench`` with no suite named runs
    it, and its module (default ``jacopt.benchmarks.<name>``)."""

    description: str
    default: bool = False
    module: str | None = None


SUITES = {
    "nist": Suite("NIST StRD nonlinear regression, 27 problems x 2 starts: LRE, steps, time "
                  "(peers: SciPy, Optimistix, JAXopt)", default=True),
    "mlp": Suite("MLP fitting: second-order (LM, GN) against optax SGD/Adam, time to target "
                 "loss", default=True),
    "policy": Suite("softmax policies: natural gradient, Newton, BFGS against vanilla policy "
                    "gradient (optax)", default=True),
    "jacobians": Suite("Jacobian core: auto/fwd/rev, batch_jacobian, elementwise_grad, chunked "
                       "memory"),
    "minimize": Suite("BFGS, L-BFGS, Newton against SciPy, Optimistix and optax on classic "
                      "functions"),
    "batch": Suite("10,000 small fits in one vmapped call against SciPy looping over them"),
    "robustness": Suite("MGH least squares from x0, 10 x0 and 100 x0: solved counts and false "
                        "successes against SciPy, Optimistix, JAXopt"),
    "bounded": Suite("L-BFGS-B and bounded Newton against SciPy L-BFGS-B and trust-constr on "
                     "Gay's bounded MGH problems, bounded Rosenbrock, box quadratics"),
    "rl": Suite("policy gradients on gymnax CartPole, Acrobot: NPG, TRPO, REINFORCE, PPO"),
}
DEFAULT_SUITES = tuple(name for name, suite in SUITES.items() if suite.default)

# peers of the ``bench`` extra: a suite skips its runs of a peer that is not installed
BENCH_PEERS = ("optimistix", "jaxopt")
INSTALL_HINT = "pip install -e '.[bench]'"

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
    """A one-line progress display on stderr: the suite, the item's count within it (out of the
    count the suite announced with :meth:`expect`, when it did), elapsed time, the item."""

    def __init__(self, suites: list[str], stream=None):
        self.suites = suites
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self.index = 0
        self.count = 0
        self.total = 0

    def begin_suite(self, index: int):
        self.index, self.count, self.total = index, 0, 0

    def expect(self, count: int):
        """``count`` more items are coming in the current suite."""
        self.total += int(count)

    def __call__(self, message: str):
        self.count += 1
        suite = self.suites[self.index]
        done = "#" * self.index + "-" * (len(self.suites) - self.index)
        of = f"/{max(self.total, self.count)}" if self.total else ""
        line = (f"[{done}] {suite} {self.count}{of}  "
                f"{time.perf_counter() - self.start:6.1f} s  {message}")
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
    for name in ("jaxlib", "optax") + BENCH_PEERS:
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
    for peer in missing_peers(records[0]):
        print(f"{peer} not installed: its runs are skipped; {INSTALL_HINT}", file=sys.stderr)
    for index, suite in enumerate(suites):
        if on_suite is not None:
            on_suite(index)
        started = time.perf_counter()
        try:
            module = importlib.import_module(getattr(SUITES.get(suite), "module", None)
                                             or f"jacopt.benchmarks.{suite}")
            suite_records = module.run(quick=quick, progress=progress)
        except Exception as exc:  # a broken suite must not hide the others' results
            print(f"\nsuite {suite!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            suite_records = [_error_record(suite, exc)]
        for rec in suite_records:
            rec.setdefault("suite", suite)
        records.extend(suite_records)
        records[0].setdefault("suite_seconds", {})[suite] = round(time.perf_counter() - started, 3)
    return records


def missing_peers(header: dict) -> list[str]:
    """The :data:`BENCH_PEERS` that the header record says are not installed."""
    versions = header.get("versions", {})
    return [peer for peer in BENCH_PEERS if peer in versions and versions[peer] is None]


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
    problem whose records carry a ``curve`` (:func:`plot_curves`); LRE per NIST run for each
    solver (:func:`plot_lre`). Returns paths; returns [] with a note on stderr when matplotlib
    is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plots written "
              f"({INSTALL_HINT} installs it)", file=sys.stderr)
        return []
    plot_dir = os.path.join(out_dir, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    figures = []
    by_problem: dict[tuple, list[dict]] = {}
    for rec in records[1:]:
        if isinstance(rec.get("curve"), dict) and rec["curve"].get("loss"):
            by_problem.setdefault((rec["suite"], rec["problem"]), []).append(rec)
    for (suite, problem), recs in by_problem.items():
        figures.append((f"{suite}-{_slug(problem)}.png", plot_curves(recs)))
    nist = [r for r in records[1:] if r.get("suite") == "nist" and r.get("lre") is not None]
    if nist:
        figures.append(("nist-lre.png", plot_lre(nist)))
    paths = []
    for name, fig in figures:
        path = os.path.join(plot_dir, name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def loss_limits(losses: list[list], target=None) -> tuple[float, float, bool]:
    """``(bottom, top, roundoff)`` of a log axis for the loss curves ``losses``.

    A loss that is a difference to a known optimum (the policy suite's gap ``J* - J``) reaches
    round-off and then reads 0 or slightly negative, which a log axis cannot show. When any
    curve has such a value (``roundoff`` is then true), the axis stops at ``eps`` times the
    largest starting loss, or at the smallest positive loss when that is higher: values below
    are round-off noise. Otherwise it stops at the smallest positive loss. The top is ten times
    the largest starting loss (a diverging method leaves the plot rather than squash it), and
    both ends keep the target in view. ``bottom`` is half the floor, so that curves drawn on
    the floor stay visible."""
    values = [[float(v) for v in curve if v is not None and math.isfinite(float(v))]
              for curve in losses]
    starts = [curve[0] for curve in values if curve and curve[0] > 0]
    positive = [v for curve in values for v in curve if v > 0]
    scale = max(starts) if starts else max(positive, default=1.0)
    roundoff = any(v <= 0 for curve in values for v in curve)
    eps = float(sys.float_info.epsilon)
    bottom = min(positive) if positive else eps * scale
    if roundoff:
        bottom = max(bottom, eps * scale)
    top = 10.0 * scale
    if isinstance(target, (int, float)) and target > 0:
        bottom, top = min(bottom, target), max(top, 10.0 * target)
    return bottom / 2.0, top, roundoff


def plot_curves(recs: list[dict]):
    """The figure for one problem: loss against wall time and against iterations, one curve
    per method (second order solid, first order dashed), the target dotted, the log axis
    limited by :func:`loss_limits` (values at or below its floor drawn on it)."""
    import matplotlib.pyplot as plt

    target = recs[0].get("target_loss")
    bottom, top, roundoff = loss_limits([r["curve"]["loss"] for r in recs], target)
    floor = 2.0 * bottom
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for rec in recs:
        curve = rec["curve"]
        loss = [float("nan") if v is None else max(float(v), floor) for v in curve["loss"]]
        style = "-" if rec.get("order") == "second" else "--"
        label = f"{rec['method']} ({rec.get('order', '?')})"
        if curve.get("time_s"):
            axes[0].plot(curve["time_s"], loss, style, label=label)
        if curve.get("iters"):
            axes[1].plot(curve["iters"], loss, style, label=label)
    for ax, xlabel in zip(axes, ("wall time after compile [s]", "iterations")):
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss")
        if isinstance(target, (int, float)) and target > 0:
            ax.axhline(target, color="grey", lw=0.8, ls=":", label="target")
        if roundoff:
            ax.axhline(floor, color="black", lw=0.6, ls="-.", label="round-off (eps x start)")
        ax.set_ylim(bottom, top)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{recs[0]['suite']}: {recs[0]['problem']}")
    fig.tight_layout()
    return fig


def plot_lre(nist: list[dict]):
    """The NIST figure: LRE (correct digits of the worst parameter) per run, one bar per
    method, the legend above the axes so that it covers no bar."""
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(r["problem"] for r in nist))
    methods = list(dict.fromkeys(r["method"] for r in nist))
    fig, ax = plt.subplots(figsize=(max(10, 0.22 * len(runs)), 4.8))
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
    ax.legend(fontsize=7, ncol=min(7, len(methods)), loc="lower center",
              bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.suptitle("NIST StRD: LRE per run")
    fig.tight_layout()
    return fig


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text)).strip("-")


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------

def format_seconds(seconds) -> str:
    """A duration with three significant digits in the unit that keeps them readable: ``"2.35
    s"``, ``"12.3 ms"``, ``"456 us"``, ``"7.00 ns"`` (``"—"`` for ``None``). Every table and
    summary line of the benchmarks prints times with it."""
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if not math.isfinite(seconds):
        return f"{seconds} s"
    if seconds == 0:
        return "0 s"
    rounded = float(f"{seconds:.3g}")  # round first, so 999.7 us becomes 1.00 ms
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if abs(rounded) >= scale or unit == "ns":
            value = rounded / scale
            break
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:.{digits}f} {unit}"


_COLUMNS = (
    ("suite", "suite", "{}"),
    ("problem", "problem", "{}"),
    ("method", "method", "{}"),
    ("order", "order", "{}"),
    ("final_loss", "final loss", "{:.3e}"),
    ("target_loss", "target", "{:.1e}"),
    ("iters_to_target", "iters to target", "{}"),
    ("time_to_target_s", "time to target", format_seconds),
    ("lre", "LRE", "{:.1f}"),
    ("compile_s", "compile", format_seconds),
    ("run_s", "run", format_seconds),
)


def _cell(value, fmt):
    if value is None:
        return "—"
    try:
        return fmt(value) if callable(fmt) else fmt.format(value)
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
    skipped = skipped_summary(records)
    if skipped:
        lines += ["", "Skipped or failed runs:"] + ["  " + line for line in skipped]
    return "\n".join(lines)


def skipped_summary(records: list[dict]) -> list[str]:
    """One line per (suite, method) with runs that were skipped (a ``note`` and no
    measurement) or failed (an ``error``), saying why; a peer that the header record says is
    not installed is named with the command that installs it."""
    header = records[0] if records and records[0].get("suite") == "meta" else {}
    missing = missing_peers(header)
    groups: dict[tuple, list[dict]] = {}
    totals: dict[tuple, int] = {}
    for rec in records:
        if rec.get("suite") == "meta":
            continue
        key = (rec.get("suite"), rec.get("method"))
        totals[key] = totals.get(key, 0) + 1
        measured = rec.get("run_s") is not None or rec.get("final_loss") is not None
        if rec.get("error") or (rec.get("note") and not measured):
            groups.setdefault(key, []).append(rec)
    lines = []
    for (suite, method), recs in groups.items():
        peer = next((p for p in missing if str(method).lower().startswith(p)), None)
        errors = [r["error"] for r in recs if r.get("error")]
        if peer is not None:
            why = f"{peer} not installed: skipped; {INSTALL_HINT}"
        elif errors:
            why = "failed: " + "; ".join(dict.fromkeys(errors))
        else:
            why = "skipped: " + "; ".join(dict.fromkeys(str(r["note"]) for r in recs))
        lines.append(f"{suite}/{method} ({len(recs)} of {totals[(suite, method)]} runs): {why}")
    return lines


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
            reached = [r for r in recs
                       if r["order"] == order and r.get("time_to_target_s") is not None]
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
                           f"{format_seconds(s['time_to_target_s'])}, {ratio:.1f}x sooner than "
                           f"the best first-order method ({f['method']}, "
                           f"{format_seconds(f['time_to_target_s'])})")
            else:
                out.append(f"{suite}/{problem}: first-order {f['method']} reached the target in "
                           f"{format_seconds(f['time_to_target_s'])}, {1 / ratio:.1f}x sooner "
                           f"than the best second-order method ({s['method']}, "
                           f"{format_seconds(s['time_to_target_s'])})")
        elif "second" in best:
            s = best["second"]
            out.append(f"{suite}/{problem}: {s['method']} reached the target in "
                       f"{format_seconds(s['time_to_target_s'])}; no first-order method "
                       f"reached it")
        elif "first" in best:
            f = best["first"]
            out.append(f"{suite}/{problem}: only first-order {f['method']} reached the target "
                       f"({format_seconds(f['time_to_target_s'])})")
        else:
            out.append(f"{suite}/{problem}: no method reached the target")
    nist = [r for r in records if r.get("suite") == "nist" and r.get("lre") is not None]
    for method in dict.fromkeys(r["method"] for r in nist):
        lres = [float(r["lre"]) for r in nist if r["method"] == method]
        ge6 = sum(v >= 6 for v in lres)
        out.append(f"nist/{method}: {ge6}/{len(lres)} runs with LRE >= 6, mean LRE "
                   f"{sum(lres) / len(lres):.2f}")
    return out
