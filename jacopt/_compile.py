"""Compiling the public entry points: ``jax.jit`` with XLA's classic CPU fusion emitters when a
solve is called directly on the CPU.

XLA's classic CPU fusion emitters compile a solver loop's many small fused kernels faster than
the default emitters and run them as fast: ``python -m jacopt.benchmarks.overhead`` prints
first-call and compile times with both (Misra1a and Thurber LM compiles 1.5x-1.7x faster,
``minimize``'s first call on Rosenbrock 0.36 -> 0.21 s with BFGS, 0.51 -> 0.40 s with Newton,
2 CPU cores). Compiler options only apply to a top-level ``jit``: inside a user's own ``jit``
(or ``vmap`` under it) the user's options apply and the plain ``jit`` is used. If this XLA does
not know the option, the plain ``jit`` is used from then on.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax

CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def cpu_fast_jit(fn: Callable, static_argnames: Sequence[str]) -> Callable:
    """``jax.jit(fn, static_argnames=...)`` that compiles with :data:`CPU_COMPILER_OPTIONS`
    when called with concrete arrays on the CPU backend (module docstring)."""
    plain = jax.jit(fn, static_argnames=tuple(static_argnames))
    fast = jax.jit(fn, static_argnames=tuple(static_argnames),
                   compiler_options=CPU_COMPILER_OPTIONS)
    fast_ok = [True]

    def call(*args, **kwargs):
        traced = any(isinstance(leaf, jax.core.Tracer)
                     for leaf in jax.tree_util.tree_leaves(args))
        if fast_ok[0] and not traced and jax.default_backend() == "cpu":
            try:
                return fast(*args, **kwargs)
            except jax.errors.JaxRuntimeError as exc:  # an XLA without the option
                if "No such compile option" not in str(exc):
                    raise
                fast_ok[0] = False
            except ValueError as exc:  # inside an outer jit (nested jits take no options)
                if "can only be passed to top-level" not in str(exc):
                    raise
        return plain(*args, **kwargs)

    call.__wrapped__ = fn
    call.__doc__ = fn.__doc__
    call.cache_size = lambda: fast._cache_size() + plain._cache_size()  # compiled variants
    return call
