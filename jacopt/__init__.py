"""jacopt: second-order optimisers built on Jacobians, in JAX.

The Jacobian core (``jacobian``, ``hessian``, ``batch_jacobian``, ``elementwise_grad`` and the
matrix-free operators) follows JAX's shape: each takes a function and returns a function.
The solvers (``least_squares``, ``curve_fit``, ``minimize``) each run a whole solve as one XLA
computation (``lax.while_loop`` under ``jit``) that works under ``vmap`` and on pytrees.

Float64: JAX computes in float32 unless ``jax.config.update("jax_enable_x64", True)`` is set
before any array is made. jacopt works in the dtype of its inputs and never casts silently.

Compiled solves are kept on disk and reused by later processes (``JACOPT_CACHE=0`` switches
this off, ``JACOPT_CACHE_DIR`` moves it from ``~/.cache/jacopt``; see :mod:`jacopt._cache`).
"""
from jacopt import linalg
from jacopt._cache import CacheWarning
from jacopt._compile import RecompileWarning
from jacopt._validate import PrecisionWarning
from jacopt.batched import batch_jacobian, elementwise_grad
from jacopt.curve_fit import CovarianceWarning, CurveFitResult, curve_fit
from jacopt.jacobian import hessian, jacobian
from jacopt.least_squares import least_squares
from jacopt.minimize import minimize
from jacopt.operators import HessianOperator, JacobianOperator, hessian_operator, jacobian_operator
from jacopt.results import History, LeastSquaresResult, MinimizeResult
from jacopt.status import Status
from jacopt.tree_index import TreeIndex

__version__ = "0.1.0"

# Loaded on first use: they import scipy.sparse, which ``import jacopt`` does not need.
_LAZY = {"jacobian_sparsity": "jacopt.sparsity", "sparse_jacobian": "jacopt.sparse",
         "sparse_hessian": "jacopt.sparse", "shard_rows": "jacopt._sharding"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jacopt' has no attribute {name!r}")


__all__ = [
    "jacobian",
    "hessian",
    "batch_jacobian",
    "elementwise_grad",
    "jacobian_operator",
    "hessian_operator",
    "jacobian_sparsity",
    "sparse_jacobian",
    "sparse_hessian",
    "JacobianOperator",
    "HessianOperator",
    "TreeIndex",
    "Status",
    "History",
    "LeastSquaresResult",
    "MinimizeResult",
    "least_squares",
    "curve_fit",
    "shard_rows",
    "CurveFitResult",
    "CovarianceWarning",
    "PrecisionWarning",
    "RecompileWarning",
    "CacheWarning",
    "linalg",
    "minimize",
]
