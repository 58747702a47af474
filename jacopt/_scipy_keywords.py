"""SciPy's keywords that jacopt's entry points do not take, and what to use instead: one table
for :func:`jacopt.least_squares`, :func:`jacopt.minimize` and :func:`jacopt.curve_fit` (whose
extra keywords go on to ``least_squares``, as SciPy's do), so that code ported from
``scipy.optimize`` fails before any work with a ``TypeError`` that names the jacopt way.
"""
from __future__ import annotations

_LEAST_SQUARES = {
    "method": "solver= chooses the method: 'lm' (Levenberg-Marquardt, takes bounds: SciPy's "
              "'trf' and 'dogbox' problems), 'gn', 'dogleg' or 'lm-matrix-free'",
    "max_nfev": "max_steps= caps the iterations (each one trial step, one evaluation)",
    "tr_solver": "solver='lm-matrix-free' is SciPy's tr_solver='lsmr' (J is never formed); "
                 "the default 'lm' solves the trust-region subproblem exactly",
    "tr_options": "pass a solver instance with its settings, e.g. "
                  "solver=jacopt.solvers.LevenbergMarquardt(...)",
    "diff_step": "derivatives come from automatic differentiation (exact), or from jac=",
    "jac_sparsity": "curve_fit forms a dense J: for a sparse one call jacopt.least_squares("
                    "residual, p0, jac_sparsity='auto') with the residual (model - ydata) / sigma",
    "kwargs": "pass fun's extra arguments through args=(...)",
    "callback": "history=True records every iteration (value, gradient norm, step) inside "
                "the compiled loop",
    "workers": "the solve is one compiled XLA computation; use jax.vmap for many fits",
}

_MINIMIZE = {
    "method": "solver= chooses the method: 'bfgs' (SciPy's 'BFGS'), 'lbfgsb' ('L-BFGS-B', "
              "the default with bounds=), 'lbfgs' (limited memory, no bounds), 'newton' "
              "('trust-exact', 'dogleg'), 'newton-cg' ('Newton-CG', 'trust-ncg', "
              "'trust-krylov')",
    "options": "each option is a keyword of its own: max_steps= (SciPy's maxiter), gtol=, "
               "ftol=, xtol=, verbose= (SciPy's disp)",
    "hess": "solver='newton' uses the exact Hessian by automatic differentiation "
            "('newton-cg' its Hessian-vector products)",
    "hessp": "solver='newton-cg' uses exact Hessian-vector products by automatic "
             "differentiation",
    "callback": "history=True records every iteration (value, gradient norm, step) inside "
                "the compiled loop",
    "constraints": "general constraints are not supported; add a penalty to fun, or "
                   "reparametrise (e.g. x = exp(u) for x > 0)",
    "maxiter": "max_steps= caps the iterations",
}

_CURVE_FIT = {
    "method": "solver= chooses the method ('lm', 'gn', 'dogleg'); 'lm' takes bounds",
    "maxfev": "max_steps= caps the iterations",
    "full_output": "the returned CurveFitResult holds everything (the solve as .result)",
    "check_finite": "inputs are always checked for NaN and inf",
    "nan_policy": "NaN in the data is an error; drop those points first",
}

INSTEAD = {
    "least_squares": _LEAST_SQUARES,
    "minimize": _MINIMIZE,
    "curve_fit": {**_LEAST_SQUARES, **_CURVE_FIT},
}
"""Per entry point: SciPy keyword -> what to use instead."""


def refuse(entry: str, keywords) -> None:
    """Raise for the first of ``keywords`` (names ``entry`` does not take): SciPy's keywords
    get what to use instead, others Python's usual message."""
    for key in keywords:
        if key in INSTEAD[entry]:
            raise TypeError(f"{entry}() got SciPy's keyword argument {key!r}; here "
                            f"{INSTEAD[entry][key]}.")
        raise TypeError(f"{entry}() got an unexpected keyword argument {key!r}.")
