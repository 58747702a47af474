"""Run benchmark suites, write ``results.json`` and plots, and format the comparison table.

Each suite is a module of this package with ``run(quick=False, progress=None) -> list[dict]``,
registered in :data:`SUITES`; ``progress`` is a callable taking one short string ("problem /
method") that the runner shows as a progress line, counted within the suite ("nist 12/54")
when the suite announces its item count with :func:`jacopt.benchmarks._records.expect`. Every
record has at least the fields in :data:`REQUIRED_FIELDS`; a record with a ``note`` and no
measurement is a skipped run, and the table says why.

``results.json`` is a JSON list: first one header record (``"suite": "meta"``) describing the
machine, the run settings, the versions and the command, then one record per (suite, problem,
method).

Entry points: ``jacopt bench SUITE ...`` (:mod:`jacopt.cli`) and ``python -m
jacopt.benchmarks.SUITE`` (:func:`main`) take the same flags (:func:`add_arguments`) and run
through the same :func:`bench`: run settings (:func:`apply_run_settings`), progress line,
``DIR/results.json``, plots, the printed tables and, with ``--out-md PATH``, a markdown page of
the suites' summary tables (:func:`format_markdown`); ``--from RESULTS_JSON`` formats a saved
run instead of running one. A suite module may define ``format_tables(records) -> str`` (its
own text tables, printed instead of the common table), ``format_summary(records) -> str``
(the shorter form the markdown page shows, where ``format_tables`` has a line per run) and
``write_plots(records, out_dir) -> list[str]`` (plots beside the common ones).
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
import types
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
    "sparse": Suite("sparse Jacobians: auto-detected pattern and colouring against dense "
                    "jax.jacfwd on the 2-D Brusselator, N = 32..256"),
    "first_call": Suite("the first call of a fit in a fresh process, split into phases, and "
                        "in a second process that loads it from the disk cache (peers: SciPy, "
                        "Optimistix)"),
    "overhead": Suite("what a call costs beyond the solve: warm direct calls against jax.jit "
                      "and SciPy, first calls with each CPU emitter"),
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


def limit_blas_threads(num_threads: int = 1) -> list[str]:
    """Pin every OpenBLAS loaded in this process to ``num_threads`` threads; returns the
    libraries changed (empty when none was found: nothing else is touched).

    Why: jaxlib's CPU LAPACK calls (Cholesky, QR, eigh, LU) go through SciPy's OpenBLAS, whose
    worker threads spin while waiting. On a shared 2-core machine that made a 354 x 354
    Cholesky 20-80x slower (2.7 ms alone, 60-300 ms beside other processes), which would swamp
    every second-order timing. The small matrices of these suites gain nothing from BLAS
    threads, and SciPy peers share the same library, so the setting is the same for all.
    A process-wide setting, made by :func:`apply_run_settings`."""
    import scipy.linalg.cython_lapack  # noqa: F401  (jaxlib's LAPACK: loads SciPy's OpenBLAS)

    changed = []
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()
                            and line.split()[-1].startswith("/")})
    except OSError:  # not Linux: leave the BLAS alone
        return changed
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(int(num_threads))
                changed.append(path)
                break
    return changed


def apply_run_settings() -> dict:
    """The settings every suite runs under, applied here once per process by :func:`bench`
    (for ``jacopt bench`` and ``python -m jacopt.benchmarks.SUITE`` alike): float64
    (``jax_enable_x64``: NIST's certificates carry 11 digits, and the targets of the other
    suites are below float32's resolution), OpenBLAS pinned to one thread
    (:func:`limit_blas_threads`), and XLA's options as the environment sets them
    (``XLA_FLAGS``; every suite compiles with the default compiler options through
    :func:`jacopt.benchmarks._records.compile_timed`). Returns them for the header record."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return {"x64": True, "blas_threads_pinned_to_1": bool(limit_blas_threads(1)),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


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


def machine_header(suites: Iterable[str], quick: bool, command: str | None = None) -> dict:
    """The header record: machine, versions, command (default: ``jacopt`` and this process's
    arguments)."""
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
        "command": command or (" ".join(["jacopt"] + sys.argv[1:]) if sys.argv else "jacopt"),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_suites(suites: list[str], *, quick: bool, progress: Callable[[str], None] | None = None,
               on_suite: Callable[[int], None] | None = None, modules: dict | None = None,
               command: str | None = None) -> list[dict]:
    """Run the named suites in order under :func:`apply_run_settings`; return the header record
    followed by every record.

    ``modules`` maps a suite to its module (or any object with its ``run``); a suite not in it
    is imported (:data:`SUITES`) and added to it. A suite whose module fails to import or
    raises is reported as one record with an ``error`` field (and a note on stderr) rather
    than stopping the other suites.
    """
    modules = {} if modules is None else modules
    settings = apply_run_settings()
    records = [machine_header(suites, quick, command)]
    records[0]["machine"].update(settings)
    for peer in missing_peers(records[0]):
        print(f"{peer} not installed: its runs are skipped; {INSTALL_HINT}", file=sys.stderr)
    for index, suite in enumerate(suites):
        if on_suite is not None:
            on_suite(index)
        started = time.perf_counter()
        try:
            suite_records = suite_module(suite, modules).run(quick=quick, progress=progress)
        except Exception as exc:  # a broken suite must not hide the others' results
            print(f"\nsuite {suite!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            suite_records = [_error_record(suite, exc)]
        for rec in suite_records:
            rec.setdefault("suite", suite)
        records.extend(suite_records)
        records[0].setdefault("suite_seconds", {})[suite] = round(time.perf_counter() - started, 3)
    return records


def suite_module(suite: str, modules: dict):
    """The module of ``suite`` from ``modules``, else imported (:data:`SUITES`) and added."""
    if suite not in modules:
        modules[suite] = importlib.import_module(
            getattr(SUITES.get(suite), "module", None) or f"jacopt.benchmarks.{suite}")
    return modules[suite]


# ------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, *, out_default: str,
                  quick_help: str = "small configurations") -> argparse.ArgumentParser:
    """The flags of every benchmark entry point (``jacopt bench`` adds the suite names)."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=out_default, metavar="DIR",
                        help=f"output folder for results.json and plots/ (default: {out_default})")
    parser.add_argument("--format", choices=("table", "json", "markdown"), default="table",
                        help="how to print the comparison (default: table)")
    parser.add_argument("--out-md", metavar="PATH",
                        help="also write each suite's summary tables as a markdown page (the "
                             "docs' tables of the run are such a page)")
    parser.add_argument("--from", dest="from_results", action="append", metavar="JSON",
                        help="format a saved run (its results.json; repeat for several runs) "
                             "instead of running: tables and --out-md only (--quick, --out "
                             "and --no-plots have no effect)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return parser


def bench(suites: list[str], options: argparse.Namespace, *, modules: dict | None = None,
          command: str | None = None) -> int:
    """Run ``suites`` with the flags of :func:`add_arguments`: the progress line on stderr,
    ``DIR/results.json``, the plots, the tables on stdout and the ``--out-md`` page; with
    ``--from``, format saved runs instead (:func:`_report_saved`). Returns the exit status: 1
    when every record is an error, else 0."""
    modules = {} if modules is None else modules
    if getattr(options, "from_results", None):
        return _report_saved(suites, options, modules)
    progress = Progress(suites)
    started = time.perf_counter()
    try:
        records = run_suites(suites, quick=options.quick, progress=progress,
                             on_suite=progress.begin_suite, modules=modules, command=command)
    finally:
        progress.close()
    path = write_results(records, options.out)
    plots = [] if options.no_plots else write_plots(records, options.out, modules)
    print(format_report(records, options.format, modules))
    if options.out_md:
        write_markdown(records, options.out_md, modules)
    if options.format != "json":
        print(f"\nwrote {path}" + (f" and {len(plots)} plots in {options.out}/plots/" if plots
                                   else "")
              + (f" and {options.out_md}" if options.out_md else "")
              + f" ({time.perf_counter() - started:.1f} s)")
    failed = [r for r in records[1:] if r.get("error")]
    return 1 if failed and len(failed) == len(records) - 1 else 0


class SavedRunError(ValueError):
    """``--from`` names a file that cannot be read, or no records of the suites asked for."""


def saved_runs(paths: list[str], suites: list[str] | None = None) -> list[dict]:
    """The records of the runs saved at ``paths`` (``results.json`` files), each run's header
    record first (an empty one for a file without), keeping only the records of ``suites``
    (all when ``None``) and the headers of the runs that keep any, their ``suites`` narrowed
    to those kept."""
    records: list[dict] = []
    for path in paths:
        try:
            saved = read_results(path)
        except (OSError, ValueError) as exc:
            raise SavedRunError(f"{path}: {exc}") from None
        for header, body in _runs(saved):
            kept = [r for r in body if suites is None or r.get("suite") in suites]
            if kept:
                names = list(dict.fromkeys(r.get("suite") for r in kept))
                records += [{**header, "suite": "meta", "suites": names}] + kept
    if not records:
        raise SavedRunError(f"no records of {', '.join(suites or ['any suite'])} in "
                            f"{', '.join(paths)}")
    return records


def _report_saved(suites: list[str] | None, options: argparse.Namespace,
                  modules: dict) -> int:
    """:func:`bench` with ``--from``: the saved runs' records of ``suites`` (all when
    ``None``; :func:`saved_runs`) printed run by run and written to ``--out-md``; nothing is
    run, and no results or plots are written."""
    records = saved_runs(options.from_results, suites)
    for suite in dict.fromkeys(r.get("suite") for r in records if r.get("suite") != "meta"):
        if suite in SUITES:  # their own tables (a module given in modules is used as it is)
            suite_module(suite, modules)
    print("\n\n".join(format_report([header] + body, options.format, modules)
                       for header, body in _runs(records)))
    if options.out_md:
        write_markdown(records, options.out_md, modules)
        if options.format != "json":
            print(f"\nwrote {options.out_md}")
    return 0


def main(suite: str, run: Callable, argv=None, *, format_tables: Callable | None = None,
         write_plots: Callable | None = None, format_summary: Callable | None = None,
         quick_help: str = "the small configuration") -> int:
    """``python -m jacopt.benchmarks.SUITE [flags]``: :func:`bench` on one suite, with the
    flags of ``jacopt bench`` (:func:`add_arguments`; ``--out`` defaults to
    ``bench-results/SUITE``). ``format_tables``, ``format_summary`` and ``write_plots`` are
    the suite's own (module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog=f"python -m jacopt.benchmarks.{suite}")
    options = add_arguments(parser, out_default=f"bench-results/{suite}",
                            quick_help=quick_help).parse_args(argv)
    module = types.SimpleNamespace(run=run, format_tables=format_tables,
                                   format_summary=format_summary, write_plots=write_plots)
    try:
        return bench([suite], options, modules={suite: module},
                     command=" ".join([f"python -m jacopt.benchmarks.{suite}"] + argv))
    except SavedRunError as exc:
        print(f"{parser.prog}: error: --from: {exc}", file=sys.stderr)
        return 2


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


def read_results(path: str) -> list[dict]:
    """The records of a ``results.json`` written by :func:`write_results` (infinities, which
    JSON writes as ``"inf"`` and ``"-inf"``, as floats again)."""
    with open(path) as fh:
        records = _restored(json.load(fh))
    if not (isinstance(records, list) and all(isinstance(r, dict) for r in records)):
        raise ValueError(f"{path} is not a results.json of jacopt bench (a list of records)")
    return records


def _restored(value):
    if isinstance(value, str) and value in ("inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restored(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------

def write_plots(records: list[dict], out_dir: str, modules: dict | None = None) -> list[str]:
    """PNG plots: loss against wall time and against iterations (one curve per method) for each
    problem whose records carry a ``curve`` (:func:`plot_curves`); LRE per NIST run for each
    solver (:func:`plot_lre`); and the plots of each suite in ``modules`` that has a
    ``write_plots`` of its own. Returns paths; returns [] with a note on stderr when matplotlib
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
    for suite, module in (modules or {}).items():
        own = getattr(module, "write_plots", None)
        if own is not None:
            paths += own([r for r in records[1:] if r.get("suite") == suite], out_dir)
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


def table_cells(records: list[dict], columns) -> tuple[list[str], list[list[str]]]:
    """``(heads, rows)`` of ``records`` for ``columns``, each ``(key, head, fmt)`` with ``fmt`` a
    format string or a callable of the value (``"—"`` where the value is ``None``)."""
    return ([head for _, head, _ in columns],
            [[_cell(r.get(key), fmt) for key, _, fmt in columns] for r in records])


def text_table(heads: list[str], rows: list[list[str]], groups: list | None = None) -> list[str]:
    """The lines of an aligned text table: the heads, a rule, the rows (cells are strings), a
    blank line between rows whose ``groups`` entries differ."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)),
             "  ".join("-" * w for w in widths)]
    for i, row in enumerate(rows):
        if groups is not None and i and groups[i] != groups[i - 1]:
            lines.append("")
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return lines


def format_table(records: list[dict], fmt: str = "table") -> str:
    """The comparison as ``table`` (aligned text), ``markdown`` or ``json``."""
    body = [r for r in records if r.get("suite") != "meta"]
    if fmt == "json":
        return json.dumps(_jsonable(records), indent=1)
    cols = [c for c in _COLUMNS if any(r.get(c[0]) is not None for r in body)] or list(_COLUMNS[:3])
    heads, rows = table_cells(body, cols)
    lines = []
    if fmt == "markdown":
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("|" + "|".join(" --- " for _ in heads) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines += text_table(heads, rows)
    item = "- " if fmt == "markdown" else ""
    summary = comparison_summary(body)
    if summary:
        lines.append("")
        lines += [item + line for line in summary]
    skipped = skipped_summary(records)
    if skipped:
        lines += ["", "Skipped or failed runs:"] + ([""] if item else [])
        lines += [(item or "  ") + line for line in skipped]
    return "\n".join(lines)


def _own_tables(records: list[dict], modules: dict | None,
                summary: bool = False) -> dict[str, str]:
    """``{suite: text}`` from the ``format_tables`` of each suite in ``modules`` that has one
    (and records to show; a suite that failed as a whole has only its error record); with
    ``summary``, its ``format_summary`` where it has one."""
    out = {}
    for suite, module in (modules or {}).items():
        own = getattr(module, "format_tables", None)
        if summary:
            own = getattr(module, "format_summary", None) or own
        recs = [r for r in records if r.get("suite") == suite]
        if own is not None and recs and not any(r.get("method") == "*" and r.get("error")
                                                for r in recs):
            out[suite] = own(recs)
    return out


def format_report(records: list[dict], fmt: str = "table", modules: dict | None = None) -> str:
    """What :func:`bench` prints: :func:`format_table` for ``json`` and ``markdown``; for
    ``table`` the common table of the suites without tables of their own, then the
    ``format_tables`` of the others."""
    if fmt != "table":
        return format_table(records, fmt)
    own = _own_tables(records, modules)
    rest = [r for r in records if r.get("suite") not in own]
    parts = [format_table(rest)] if not own or any(r.get("suite") != "meta" for r in rest) else []
    return "\n\n".join(parts + list(own.values()))


def format_markdown(records: list[dict], modules: dict | None = None) -> str:
    """A markdown page of one or more runs' summary tables, for the docs: each run named
    (command, date, machine, versions), then per suite its description and its own tables
    (``format_summary``, else ``format_tables``, as preformatted text) or, for a suite without
    them, the common table.
    Every record is in ``results.json``. Generated, not typed: rerun the command to refresh
    it."""
    lines = ["<!-- generated by `jacopt bench --out-md`; rerun the command, do not edit -->",
             "", "# Benchmark tables", ""]
    runs = _runs(records)
    for number, (header, body) in enumerate(runs, 1):
        machine, versions = header.get("machine", {}), header.get("versions", {})
        if len(runs) > 1:
            lines += [f"## Run {number}: {', '.join(dict.fromkeys(r.get('suite') for r in body))}",
                      ""]
        lines += [f"Generated by `{header.get('command', 'jacopt bench')}` on "
                  f"{header.get('date_utc', '?')}: {machine.get('processor', '?')}, "
                  f"{machine.get('cpu_count', '?')} CPUs, {machine.get('jax_backend', '?')} "
                  f"backend, JAX {versions.get('jax', '?')}, jacopt {versions.get('jacopt', '?')}"
                  + (", quick configurations" if header.get("quick") else "") + ".", ""]
        own = _own_tables(body, modules, summary=True)
        for suite in dict.fromkeys([*(header.get("suites") or ()),
                                    *(r.get("suite") for r in body)]):
            recs = [r for r in body if r.get("suite") == suite]
            if not recs:
                continue
            lines += [f"### {suite}", ""]
            if suite in SUITES:
                lines += [SUITES[suite].description + ".", ""]
            if suite not in own:
                lines += [format_table(recs, "markdown"), ""]
                continue
            lines += ["```text", own[suite], "```", ""]
            skipped = skipped_summary([header] + recs)
            if skipped:
                lines += ["Skipped or failed runs:", ""] + ["- " + s for s in skipped] + [""]
    return "\n".join(lines)


def _runs(records: list[dict]) -> list[tuple[dict, list[dict]]]:
    """``(header, records)`` per run: each header record starts a run (records before the
    first header form a run with an empty one)."""
    runs: list[tuple[dict, list[dict]]] = []
    for rec in records:
        if rec.get("suite") == "meta":
            runs.append((rec, []))
        else:
            if not runs:
                runs.append(({}, []))
            runs[-1][1].append(rec)
    return runs


def write_markdown(records: list[dict], path: str, modules: dict | None = None) -> str:
    """Write :func:`format_markdown` to ``path``; returns ``path``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        fh.write(format_markdown(records, modules))
    return path


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
