"""The first-call benchmark measures what it names: a cold first process compiles, and the
second process loads the compiled solve from the cache instead (figures are printed by
``jacopt bench first_call``, not checked here)."""
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


def test_the_table_splits_each_first_call_and_compares_it_with_the_peers():
    phases = {p: 0.1 for p in first_call.PHASES}
    records = [dict(problem="misra1a", method=label, run_s=total, phases=phases, warm_s=1e-3,
                    load_average=1.0)
               for label, total in (("jacopt first", 1.1), ("jacopt second", 0.09),
                                    ("optimistix", 1.0), ("scipy", 0.01))]
    text = first_call.format_tables(records)
    assert "least_squares LM, NIST Misra1a (load average 1.0)" in text
    assert "1.10x optimistix's first call, 110.00x scipy's first call" in text
    assert "second process 90.0 ms" in text
    # the second process's phases add up to more than its total: "other" is not shown
    rows = {line.split()[1]: line.split() for line in text.splitlines()
            if line.startswith("  jacopt ") and "=" not in line}
    assert rows["first"][-2] == "400.0" and rows["second"][-2] == "n/a"
