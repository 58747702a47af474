"""The benchmark harness: one timing rule (checked on a fake clock, so no test depends on the
machine's speed), one compile call site, one entry point for ``jacopt bench`` and ``python -m
jacopt.benchmarks.SUITE``, and the markdown page of the tables."""
import ast
import json
import pathlib
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from jacopt import cli
from jacopt.benchmarks import _records, runner

BENCHMARKS = pathlib.Path(_records.__file__).parent


class _Clock:
    """A stand-in for ``time.perf_counter`` that advances only when the timed call runs."""

    def __init__(self):
        self.now = 0.0
        self.calls = 0

    def __call__(self):
        return self.now

    def call(self, seconds):
        def run():
            self.calls += 1
            self.now += seconds
            return self.calls

        return run


@pytest.fixture
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr(_records.time, "perf_counter", fake)
    return fake


def test_a_long_warm_up_is_the_measurement(clock):
    out, run_s = _records.time_calls(clock.call(1.5), repeats=5)
    assert (out, run_s, clock.calls) == (1, 1.5, 1)


def test_short_runs_repeat_until_the_minimum_total_then_take_the_median(clock):
    out, run_s = _records.time_calls(clock.call(0.004), repeats=3)
    # warm-up, then calls until 0.05 s are spent (13 x 4 ms = 52 ms)
    assert clock.calls == 1 + 13 and out == clock.calls
    assert run_s == pytest.approx(0.004)
    clock.calls = 0
    _records.time_calls(clock.call(1e-6), repeats=3)
    assert clock.calls == 1 + 50  # at most max_repeats timed calls


def test_slow_runs_stop_once_the_maximum_total_is_spent(clock):
    _, run_s = _records.time_calls(clock.call(0.7), repeats=5)
    assert clock.calls == 1 + 3 and run_s == pytest.approx(0.7)  # 3 x 0.7 s >= 2 s


def test_shorthands_are_the_same_rule(clock):
    assert _records.time_once(clock.call(0.2)) == (1, pytest.approx(0.2))
    assert clock.calls == 1
    assert _records.time_compiled(clock.call(0.9), repeats=2) == pytest.approx(0.9)
    assert clock.calls == 3  # no warm-up: two timed calls


def test_compile_timed_returns_the_compiled_function():
    seconds, compiled = _records.compile_timed(lambda x, k: k * jnp.sin(x), jnp.arange(3.0), 2.0)
    assert seconds > 0
    np.testing.assert_allclose(compiled(jnp.arange(3.0), 2.0), 2.0 * np.sin(np.arange(3.0)))
    out, compile_s, run_s = _records.compile_and_time(lambda x: x @ x, jnp.ones(4), repeats=1)
    assert float(out) == 4.0 and compile_s > 0 and run_s > 0


def _calls(tree: ast.AST, attr: str):
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == attr]


def test_one_compile_site_and_no_suite_keeps_its_own_clock():
    """In the registered suites and the harness's tools, ``lower(...).compile()`` appears in the
    harness only, and ``perf_counter`` in the harness and the runner's progress clock only (the
    fresh-process scripts of overhead and first_call are strings)."""
    modules = {(suite.module or name).rsplit(".", 1)[-1] + ".py"
               for name, suite in runner.SUITES.items()}
    modules |= {"overhead.py", "compile_floor.py", "first_call.py", "peers.py", "runner.py",
                "_records.py"}
    trees = {name: ast.parse((BENCHMARKS / name).read_text()) for name in modules}
    compile_sites = {name: len([
        node for node in _calls(tree, "compile")
        if isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
        and node.value.func.attr == "lower"]) for name, tree in trees.items()}
    assert {name for name, n in compile_sites.items() if n} == {"_records.py"}
    assert compile_sites["_records.py"] == 1
    assert {name for name, tree in trees.items() if _calls(tree, "perf_counter")} == {
        "_records.py", "runner.py"}


def test_runner_does_not_import_the_records_module():
    tree = ast.parse((BENCHMARKS / "runner.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names} | {node.module for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom)}
    assert not any("_records" in str(name) for name in imported)


def _toy_run(quick=False, progress=None):
    base = dict(suite="toy", problem="p", order="second", target_loss=1e-6)
    return [_records.make_record(method="lm", losses=[1.0, 1e-3, 1e-9], run_s=2e-3,
                                 compile_s=0.5, **base),
            _records.make_record(method="adam", losses=[1.0, 0.5], run_s=1e-3, compile_s=0.1,
                                 **dict(base, order="first"))]


def test_python_m_and_jacopt_bench_take_the_same_flags(monkeypatch, tmp_path, capsys):
    flags = ["--quick", "--format", "markdown", "--no-plots"]
    monkeypatch.setitem(sys.modules, "jacopt.benchmarks.toy",
                        types.SimpleNamespace(run=_toy_run, format_tables=None))
    monkeypatch.setitem(runner.SUITES, "toy", runner.Suite("a toy suite"))
    assert cli.main(["bench", "toy", "--out", str(tmp_path / "cli"),
                     "--out-md", str(tmp_path / "cli.md")] + flags) == 0
    assert runner.main("toy", _toy_run, ["--out", str(tmp_path / "m"),
                                         "--out-md", str(tmp_path / "m.md")] + flags) == 0
    by_cli, by_m = (json.loads((tmp_path / name / "results.json").read_text())
                    for name in ("cli", "m"))
    for header in (by_cli[0], by_m[0]):
        assert header["quick"] and header["machine"]["blas_threads_pinned_to_1"] in (True, False)
        assert header["machine"]["x64"] is True
    assert by_cli[0]["command"].startswith("jacopt bench toy --out")
    assert by_m[0]["command"].startswith("python -m jacopt.benchmarks.toy --out")
    assert by_cli[1:] == by_m[1:] and len(by_m) == 3
    pages = [[line for line in (tmp_path / name).read_text().splitlines()
              if not line.startswith("Generated by")] for name in ("cli.md", "m.md")]
    assert pages[0] == pages[1] and "### toy" in pages[0]


def test_markdown_page_names_the_run_and_holds_each_suites_summary(tmp_path, capsys):
    def own_tables(records):
        return f"own table of {len(records)} records"

    def run(quick=False, progress=None):  # a note record over every problem, as minimize has
        return _toy_run() + [{"suite": "toy", "problem": "*", "method": "units-check",
                              "order": "note"}]

    argv = ["--out", str(tmp_path), "--out-md", str(tmp_path / "page" / "toy.md"),
            "--no-plots"]
    assert runner.main("toy", run, argv, format_tables=own_tables) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("own table of 3 records")  # table format: the suite's own tables
    page = (tmp_path / "page" / "toy.md").read_text()
    assert "Generated by `python -m jacopt.benchmarks.toy --out" in page
    assert "### toy" in page and "```text\nown table of 3 records\n```" in page
    assert "| toy | p |" not in page  # the rows are in results.json, not on the page
    # a shorter summary where the suite has one; the common table where it has none
    assert runner.main("toy", run, argv, format_tables=own_tables,
                       format_summary=lambda records: "summary only") == 0
    page = (tmp_path / "page" / "toy.md").read_text()
    assert "```text\nsummary only\n```" in page and "own table" not in page
    assert runner.main("toy", run, argv) == 0
    page = (tmp_path / "page" / "toy.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| toy | p |")]
    assert [row.split(" | ")[2] for row in rows] == ["lm", "adam"]
    assert "- toy/p: lm reached the target" in page  # the comparison line, as a list item


def test_a_saved_run_is_formatted_again_without_running(monkeypatch, tmp_path, capsys):
    """``--from`` reads results.json back (infinities included) and writes the same page as
    the run did, running nothing; a file with no records of the named suite is an error."""
    def run(quick=False, progress=None):
        recs = _toy_run()
        recs[1]["final_loss"] = float("inf")
        return recs

    def own_tables(records):
        losses = [r["final_loss"] for r in records]
        assert all(isinstance(v, float) for v in losses)  # "inf" read back as a float
        return f"final losses {losses}"

    toy = types.SimpleNamespace(run=run, format_tables=own_tables)
    monkeypatch.setitem(sys.modules, "jacopt.benchmarks.toy", toy)
    monkeypatch.setitem(runner.SUITES, "toy", runner.Suite("a toy suite"))
    assert cli.main(["bench", "toy", "--no-plots", "--out", str(tmp_path),
                     "--out-md", str(tmp_path / "run.md")]) == 0
    saved = tmp_path / "results.json"
    assert json.loads(saved.read_text())[2]["final_loss"] == "inf"
    records = runner.read_results(str(saved))
    assert records[2]["final_loss"] == float("inf") and records[0]["suite"] == "meta"
    monkeypatch.setattr(toy, "run", None)  # nothing may run
    capsys.readouterr()
    assert cli.main(["bench", "--from", str(saved), "--out-md", str(tmp_path / "again.md")]) == 0
    assert "final losses [1e-09, inf]" in capsys.readouterr().out
    assert (tmp_path / "again.md").read_text() == (tmp_path / "run.md").read_text()
    assert cli.main(["bench", "nist", "--from", str(saved)]) == 2
    assert "no records of nist" in capsys.readouterr().err


def test_saved_runs_keep_their_own_headers_and_suites(tmp_path, capsys):
    """Several files: each run keeps its header; a file without one gets an empty header
    rather than joining the run before it; naming a suite keeps its records and narrows the
    headers; python -m and jacopt bench report an unreadable file as a usage error."""
    def header(command, suites):
        return {"suite": "meta", "command": command, "suites": suites}

    def rec(suite, loss):
        return dict(_records.make_record(suite=suite, problem="p", method="lm", order="second",
                                         losses=[1.0, loss], run_s=1e-3, compile_s=0.1,
                                         target_loss=1e-6))

    files = {"a.json": [header("jacopt bench x y", ["x", "y"]), rec("x", 0.5), rec("y", 0.25)],
             "b.json": [rec("y", 0.125)]}
    for name, records in files.items():
        (tmp_path / name).write_text(json.dumps(records))
    paths = [str(tmp_path / name) for name in files]
    runs = runner._runs(runner.saved_runs(paths))
    assert [(h.get("command"), h["suites"], [r["final_loss"] for r in body])
            for h, body in runs] == [("jacopt bench x y", ["x", "y"], [0.5, 0.25]),
                                     (None, ["y"], [0.125])]
    only_y = runner.saved_runs(paths, ["y"])
    assert [r["suites"] for r in only_y if r["suite"] == "meta"] == [["y"], ["y"]]
    page = runner.format_markdown(only_y)
    assert page.count("## Run ") == 2 and page.count("### y") == 2 and "### x" not in page
    with pytest.raises(runner.SavedRunError, match="no records of z"):
        runner.saved_runs(paths, ["z"])
    missing = str(tmp_path / "missing.json")
    assert runner.main("y", _toy_run, ["--from", missing]) == 2
    assert "--from" in capsys.readouterr().err
    assert cli.main(["bench", "--from", missing]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_the_docs_tables_page_is_generated():
    """docs/benchmark-tables.md is written by ``jacopt bench --from ... --out-md``: it names
    each run's command and holds only registered suites."""
    page = (pathlib.Path(__file__).parents[1] / "docs" / "benchmark-tables.md").read_text()
    assert page.startswith("<!-- generated by `jacopt bench --out-md`")
    assert page.count("Generated by `jacopt bench ") >= 1
    suites = [line[4:] for line in page.splitlines() if line.startswith("### ")]
    assert suites and set(suites) <= set(runner.SUITES)
