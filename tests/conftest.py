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
def cache_dir(tmp_path, monkeypatch):
    """A private, empty disk cache of compiled solves switched on, and nothing compiled held
    in memory (as in a new process)."""
    from jacopt import _cache, _shortcut

    folder = tmp_path / "cache"
    monkeypatch.setenv("JACOPT_CACHE", "1")
    monkeypatch.setenv("JACOPT_CACHE_DIR", str(folder))
    monkeypatch.setattr(_cache, "_programs", {})
    monkeypatch.setattr(_shortcut, "_signatures", {})
    monkeypatch.setattr(_shortcut, "_calls", {})
    return folder
