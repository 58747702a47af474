"""The sparse benchmark suite at a tiny size: records complete, zero missed nonzeros, and the
dense peer skipped with a note above the memory limit."""
import jax.numpy as jnp

from jacopt.benchmarks import sparse as bench
from jacopt.benchmarks.runner import REQUIRED_FIELDS


def test_brusselator_case_records():
    sparse, dense = bench.brusselator_case(5, repeats=1)
    for rec in (sparse, dense):
        assert set(REQUIRED_FIELDS) <= set(rec)
    assert sparse["missed_nonzeros"] == 0 and sparse["max_abs_diff"] < 1e-9
    assert sparse["lower_bound"] == 6 <= sparse["colors"] < sparse["n"] == 50
    assert dense["run_s"] > 0 and sparse["run_s"] > 0 and sparse["memory_ratio"] > 1
    assert "N=5" in bench.format_table([sparse, dense])


def test_dense_skipped_above_the_limit(monkeypatch):
    monkeypatch.setattr(bench, "DENSE_LIMIT_BYTES", 1000)
    sparse, dense = bench.brusselator_case(4, repeats=1)
    assert dense["run_s"] is None and "skipped" in dense["note"]
    assert sparse["colors"] >= 6 and jnp.isfinite(sparse["run_s"])
