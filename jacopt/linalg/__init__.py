"""Linear algebra for jacopt's solvers, in one place.

- :mod:`jacopt.linalg.iterative`: matrix-free Krylov solvers on flat vectors and operators
  (:func:`cg`, :func:`lsqr`, :func:`steihaug_cg`), each one ``lax.while_loop``.
- :mod:`jacopt.linalg.dense`: the dense kernels of the least-squares solvers (Householder QR
  :func:`r_factor` / :func:`triangular_factor`, triangular solves, the damped and dual
  factorisations, the rank-safe :func:`triangular_lstsq`) and the truncated SVD / eigenvalue
  pseudo-inverses (:func:`lstsq_svd`, :func:`gram_pinv`, :func:`pinv_symmetric_apply`).
- :mod:`jacopt.linalg.tsqr`: the communication-avoiding QR of rows split over devices
  (:func:`tsqr_factor`, :func:`tsqr_r`).
"""
from jacopt.linalg.dense import (  # noqa: F401
    UNROLLED_MAX_N,
    GramPinv,
    SVDSolve,
    damped_step,
    dual_factor,
    gram_pinv,
    lstsq_svd,
    pinv_symmetric_apply,
    r_factor,
    solve_upper,
    solve_upper_transposed,
    triangular_factor,
    triangular_lstsq,
)
from jacopt.linalg.iterative import (  # noqa: F401
    LSQR_STOP_MESSAGES,
    CGResult,
    LSQRResult,
    SteihaugResult,
    boundary_root,
    cg,
    lsqr,
    steihaug_cg,
)
from jacopt.linalg.tsqr import tsqr_factor, tsqr_r  # noqa: F401

__all__ = ["CGResult", "LSQRResult", "LSQR_STOP_MESSAGES", "cg", "lsqr", "SteihaugResult",
           "steihaug_cg", "boundary_root", "SVDSolve", "lstsq_svd", "GramPinv", "gram_pinv",
           "pinv_symmetric_apply", "UNROLLED_MAX_N", "r_factor", "triangular_factor",
           "solve_upper", "solve_upper_transposed", "damped_step", "dual_factor",
           "triangular_lstsq", "tsqr_factor", "tsqr_r"]
