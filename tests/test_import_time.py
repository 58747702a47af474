"""``import jacopt`` loads only what a solve needs: SciPy, optax, the problem sets and the
benchmarks load when used (``python -X importtime -c "import jacopt"`` shows the cost)."""
import json
import subprocess
import sys

LAZY = ("scipy", "optax", "jacopt.problems", "jacopt.benchmarks", "jacopt.cli")


def test_import_jacopt_leaves_scipy_optax_problems_and_benchmarks_unloaded():
    code = ("import json, sys, jacopt; "
            f"print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_lazy_modules_are_importable():
    # the check above would pass on a misspelt module name
    code = ("import json, sys, jacopt, jacopt.problems, jacopt.benchmarks, jacopt.cli, scipy, "
            f"optax; print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == list(LAZY)
