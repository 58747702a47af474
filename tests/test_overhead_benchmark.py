"""The overhead benchmark's warm-call part runs and reports every call it names (its figures
are printed by ``python -m jacopt.benchmarks.overhead``, not checked here)."""
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
