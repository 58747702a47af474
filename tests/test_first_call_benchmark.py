"""The first-call benchmark measures what it names: a cold first process compiles, and the
second process loads the compiled solve from the cache instead (figures are printed by
``python -m jacopt.benchmarks.first_call``, not checked here)."""
import pytest

from jacopt.benchmarks import first_call


@pytest.mark.slow  # four fresh processes
def test_the_second_process_loads_instead_of_compiling():
    rows = first_call.measure("rosenbrock", repeats=1)
    assert set(rows) >= {"jacopt first", "jacopt second", "scipy"}
    first, second = rows["jacopt first"], rows["jacopt second"]
    assert first["compile"] > 0 and first["load"] == 0
    assert second["compile"] == 0 and second["load"] > 0
    assert first["x0"] == pytest.approx(1.0, abs=1e-6) and second["x0"] == first["x0"]
    assert rows["scipy"]["x0"] == pytest.approx(1.0, abs=1e-5)


def test_other_is_not_shown_negative_when_nested_traces_count_twice():
    row = {"total": 0.8, "trace": 0.5, "lower": 0.4, "compile": 0.0, "load": 0.0}
    assert first_call._other(row) is None  # optimistix's nested jits: phases sum past total
    row["lower"] = 0.1
    assert first_call._other(row) == pytest.approx(0.2)
