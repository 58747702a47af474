"""The overhead benchmark's warm-call part runs and reports every call it names (its figures
are printed by ``jacopt bench overhead``, not checked here)."""
import math

from jacopt.benchmarks import overhead


def test_warm_calls_report_every_call_with_a_positive_time():
    rows = overhead.warm_calls(repeats=2)
    labels = [label for label, _ in rows]
    assert labels == ["curve_fit, direct", "SciPy curve_fit", "least_squares, direct",
                      "least_squares, inside jax.jit",
                      "least_squares, a closure defined anew at each call",
                      "minimize BFGS on Rosenbrock, direct",
                      "minimize BFGS on Rosenbrock, inside jax.jit"]
    assert all(math.isfinite(ms) and ms > 0 for _, ms in rows)


def test_the_table_gives_warm_calls_in_ms_and_first_calls_in_s():
    records = [dict(problem="warm call", method="least_squares, direct", run_s=1.25e-4,
                    compile_s=None, load_average=0.5),
               dict(problem="first call", method="minimize bfgs on Rosenbrock, first call",
                    run_s=None, compile_s=0.75, load_average=1.5)]
    lines = overhead.format_tables(records).splitlines()
    assert lines[0] == "warm calls (median; load average 0.5)"
    assert lines[1].split()[-2:] == ["0.125", "ms"]
    assert lines[2] == "first calls (median; load average 1.5)"
    assert lines[3].split()[-2:] == ["0.750", "s"]
