"""The compile-floor benchmark times every function it names, and its minimal LM is a working
solver (its figures are printed by ``python -m jacopt.benchmarks.compile_floor``, not checked
here)."""
import math

import pytest

from jacopt.benchmarks import compile_floor


def test_run_times_every_function_and_the_minimal_lm_reaches_nist_certified_rss():
    records = compile_floor.run(["Misra1a"])
    assert [r["function"] for r in records] == list(compile_floor.builders())
    assert all(math.isfinite(r["compile_s"]) and r["compile_s"] > 0 for r in records)
    (minimal,) = [r for r in records if r["function"] == "minimal-LM"]
    assert minimal["reaches_certified"]  # from NIST start 1, b = (500, 1e-4)


def test_summary_ratios_are_per_problem_medians_against_optimistix():
    records = [
        {"problem": "a", "function": "optimistix-LM", "compile_s": 1.0},
        {"problem": "b", "function": "optimistix-LM", "compile_s": 2.0},
        {"problem": "c", "function": "optimistix-LM", "compile_s": 4.0},
        {"problem": "a", "function": "residual", "compile_s": 0.5},
        {"problem": "b", "function": "residual", "compile_s": 0.2},
        {"problem": "c", "function": "residual", "compile_s": 4.0},
    ]
    rows = {r["function"]: r for r in compile_floor.summary(records)}
    assert rows["residual"]["median_compile_s"] == pytest.approx(0.5)
    assert rows["residual"]["median_ratio"] == pytest.approx(0.5)  # of 0.5, 0.1, 1.0
    assert rows["optimistix-LM"]["median_ratio"] == pytest.approx(1.0)


def test_summary_without_optimistix_has_no_ratio():
    rows = compile_floor.summary([{"problem": "a", "function": "residual", "compile_s": 0.1}])
    assert "median_ratio" not in rows[0]
