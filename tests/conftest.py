"""Tests run in float64 (NIST and finite-difference checks need it); float32 cases opt in
explicitly with float32 inputs."""
import gc
import os

import jax
import pytest

from jacopt._compile import clear_compiled

jax.config.update("jax_enable_x64", True)
os.environ["JACOPT_CACHE"] = "0"  # the suite never writes the user's cache (test_cache opts in)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each compiled XLA:CPU program holds dozens of memory maps; a whole session compiles
    thousands and would reach the kernel's limit (vm.max_map_count, 65,530), where the next
    compile crashes. Dropping them after every test module keeps the count flat."""
    yield
    clear_compiled()
    gc.collect()


@pytest.fixture
def new_process(monkeypatch):
    """A function that makes this process forget the compiled programs and call records it
    holds in memory, as a new process would (the disk cache stays)."""
    from jacopt import _cache, _shortcut

    def forget():
        monkeypatch.setattr(_cache, "_programs", {})
        monkeypatch.setattr(_shortcut, "_signatures", {})
        monkeypatch.setattr(_shortcut, "_calls", {})

    return forget


@pytest.fixture
def cache_dir(tmp_path, monkeypatch, new_process):
    """A private, empty disk cache of compiled solves switched on, and nothing compiled held
    in memory (as in a new process)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("JACOPT_CACHE", "1")
    monkeypatch.setenv("JACOPT_CACHE_DIR", str(folder))
    new_process()
    return folder


@pytest.fixture(scope="module")
def bandit():
    """The entropy-regularised bandit of the policy registry (policy tests)."""
    from jacopt.problems import policy_problems

    return policy_problems.get("entropy-bandit")


@pytest.fixture(scope="module")
def mdp():
    """The entropy-regularised MDP of the policy registry (policy tests)."""
    from jacopt.problems import policy_problems

    return policy_problems.get("entropy-mdp")
