"""The sparse benchmark suite at a tiny size: records complete, zero missed nonzeros, and the
dense peer skipped with a note above the memory limit."""
import jax.numpy as jnp

from jacopt.benchmarks import sparse as bench
from jacopt.benchmarks.runner import REQUIRED_FIELDS


def test_brusselator_case_records():
    sparse, tabu, dense = bench.brusselator_case(5, repeats=1)
    for rec in (sparse, tabu, dense):
        assert set(REQUIRED_FIELDS) <= set(rec) and "out" not in rec
    for rec in (sparse, tabu):
        assert rec["missed_nonzeros"] == 0 and rec["max_abs_diff"] < 1e-9
        assert rec["lower_bound"] == 6 <= rec["colors"] < rec["n"] == 50
        assert rec["run_s"] > 0 and rec["memory_ratio"] > 1
    assert tabu["colors"] <= sparse["colors"] and "color_effort" in tabu["method"]
    assert dense["run_s"] > 0
    assert "N=5" in bench.format_tables([sparse, tabu, dense])


def test_dense_skipped_above_the_limit(monkeypatch):
    monkeypatch.setattr(bench, "DENSE_LIMIT_BYTES", 1000)
    monkeypatch.setattr(bench, "TABU_MAX_N", 0)
    sparse, dense = bench.brusselator_case(4, repeats=1)
    assert dense["run_s"] is None and "skipped" in dense["note"]
    assert sparse["colors"] >= 6 and jnp.isfinite(sparse["run_s"])
