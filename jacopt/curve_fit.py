"""``jacopt.curve_fit``: fit a model to data and estimate the parameter covariance, in the style
of ``scipy.optimize.curve_fit``, solved by :func:`jacopt.least_squares`.

Example::

    import jax, jax.numpy as jnp, jacopt
    jax.config.update("jax_enable_x64", True)

    def model(x, p):                      # p: the parameters, an array or any pytree
        return p[0] * jnp.exp(-p[1] * x)

    fit = jacopt.curve_fit(model, x, y, jnp.array([1.0, 0.1]), sigma=dy)
    popt, pcov = fit                      # unpacks like SciPy's (popt, pcov)
    fit.stderr, fit.covariance_valid, fit.result.status_name

**Model convention.** ``model(xdata, params)`` with ``params`` shaped like ``p0`` (an array or a
pytree), returning an array of ``ydata``'s shape. SciPy's ``f(x, a, b, c)`` becomes
``lambda x, p: f(x, *p)`` with ``p0`` an array (define it once, not inside a loop, so the
compiled solve is reused).

**Covariance** (as SciPy computes it). With ``J`` the Jacobian of the weighted residuals
``w * (model(xdata, popt) - ydata)`` at the solution (after the robust-loss correction when a
``loss`` is given), ``pcov = (J^T J)^+ = (R^T R)^+`` with ``R`` the ``n x n`` triangular
factor of ``J = Q R``, from an SVD of ``R`` (the singular values of ``J``) that discards singular
values ``<= eps * max(m, n) * s_max`` (:func:`jacopt.linalg.gram_pinv`). When the data are
split over devices by rows, ``R`` comes from a TSQR (:func:`jacopt.linalg.tsqr_r`), so ``J``'s
rows never leave their devices. Unless ``absolute_sigma``, it is multiplied by the residual
variance ``2 * cost / (m - n)`` (``m`` data, ``n`` parameters), so ``sigma`` only needs to be
right up to a common factor. (Like SciPy, the degrees of freedom are ``m - n`` even when the
Jacobian is rank-deficient.) With ``mask`` (padding, e.g. from :func:`jacopt.shard_rows`), ``m``
counts only the points whose mask is 1, so a padded fit's covariance is the unpadded one's.
``pcov`` is a 2-D ``(n, n)`` array in the ravel order of ``jax.flatten_util.ravel_pytree(p0)``
(:class:`jacopt.TreeIndex` names its rows).

**When the covariance cannot be estimated** the result says so with ``covariance_valid=False``
and, outside ``jit``/``vmap``, a :class:`CovarianceWarning` that names the reason:

- ``m <= n`` without ``absolute_sigma`` (no degrees of freedom for the residual variance), a
  non-finite Jacobian, or non-finite residuals (e.g. a vmapped member whose data hold a NaN):
  every entry of ``pcov`` (and ``stderr``) is ``inf``, as in SciPy;
- a rank-deficient Jacobian (some parameters enter only through combinations, e.g. ``a * b``):
  ``pcov`` is the pseudo-inverse (SciPy's value; ``c^T pcov c`` is the right variance for any
  identifiable combination ``c``, i.e. ``c`` in the row space of ``J``), the parameters that are
  not identifiable get ``stderr = inf`` and ``identifiable = False``, and the warning names them.

A fit that does not converge is reported by ``result.success``/``status`` and, outside
``jit``, a ``UserWarning`` with the message (SciPy raises ``RuntimeError``; jacopt never raises
after the solve started, so a batch keeps every member's answer).

Errors (raised before any work, naming the argument): ``ydata`` not a non-empty array, or
non-finite; ``xdata`` non-finite or, for an array ``xdata``, neither its first nor its last axis
of length ``len(ydata)``; ``model`` output shape different from ``ydata``'s; ``sigma`` of the wrong
shape, non-positive, non-finite or (2-D) not positive definite; ``mask`` of the wrong shape,
not 0/1, all 0, or with a 2-D ``sigma``; ``ydata``/``sigma`` with a
floating dtype different from ``p0``'s (integers are converted to ``p0``'s dtype); ``p0``
missing; a keyword of SciPy's ``curve_fit`` (or ``least_squares``) with no counterpart here (the
message names what to use instead); ``model`` calling NumPy on the parameters (use
``jax.numpy``). Errors raised by the model itself propagate unchanged. With x64 off, NumPy
float64 ``p0`` or data run in float32 with one :class:`jacopt.PrecisionWarning` per process.
A scalar ``sigma`` applies to every point, and a list of numbers (``p0``, ``xdata``)
is a 1-D array, as in SciPy.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular

from jacopt import _scipy_keywords
from jacopt._compile import cpu_fast_jit
from jacopt._sharding import placed_like, rows_of
from jacopt._validate import (
    TRACING_ERRORS,
    all_finite,
    as_float32_if_needed,
    as_float_tree,
    is_traced,
    numbers_as_array,
    outer_broadcast_error,
    tracing_error,
)
from jacopt.least_squares import least_squares
from jacopt.linalg import gram_pinv, tsqr_r
from jacopt.results import LeastSquaresResult
from jacopt.tree_index import TreeIndex

__all__ = ["curve_fit", "CurveFitResult", "CovarianceWarning"]


class CovarianceWarning(UserWarning):
    """The parameter covariance of :func:`curve_fit` could not be (fully) estimated."""


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["params", "covariance", "stderr", "identifiable", "rank", "covariance_valid",
                 "residual_variance", "dof", "result"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class CurveFitResult:
    """What :func:`curve_fit` returns (a pytree: it passes through ``jit`` and batches under
    ``vmap``). Iterating gives ``(params, covariance)``, so ``popt, pcov = curve_fit(...)`` works
    as in SciPy.

    - ``params``: the fitted parameters, shaped like ``p0`` (SciPy's ``popt``, an alias).
    - ``covariance``: ``(n, n)`` parameter covariance in ravel order (SciPy's ``pcov``, an
      alias); all
      ``inf`` when it cannot be estimated (see the module docstring).
    - ``stderr``: standard errors ``sqrt(diag(covariance))``, shaped like ``p0``; ``inf`` for
      parameters that are not identifiable.
    - ``identifiable``: ``(n,)`` bool, in ravel order: the parameter is determined by the data
      (its direction lies in the row space of the Jacobian).
    - ``rank``: numerical rank of the weighted Jacobian at the solution.
    - ``covariance_valid``: the covariance is a proper inverse: finite Jacobian, full rank, and
      ``m > n`` unless ``absolute_sigma``.
    - ``residual_variance``: ``2 * cost / (m - n)`` (reduced chi-square with ``sigma``), NaN
      when ``m <= n``; it scales the covariance unless ``absolute_sigma``.
    - ``dof``: degrees of freedom ``m - n``.
    - ``result``: the :class:`jacopt.LeastSquaresResult` of the solve (status, cost, counts,
      residuals of the *weighted* problem, its Jacobian).
    """

    params: Any
    covariance: Any
    stderr: Any
    identifiable: Any
    rank: Any
    covariance_valid: Any
    residual_variance: Any
    dof: Any
    result: LeastSquaresResult

    def __iter__(self):
        return iter((self.params, self.covariance))

    popt = property(lambda self: self.params, doc="``params`` (SciPy's name).")
    pcov = property(lambda self: self.covariance, doc="``covariance`` (SciPy's name).")

    def __repr__(self):
        from jacopt.results import _short

        fields = ", ".join(f"{f.name}={_short(getattr(self, f.name))}"
                           for f in dataclasses.fields(self) if f.name != "result")
        return f"CurveFitResult({fields}, result={self.result!r})"

    @property
    def success(self):
        return self.result.success


# ------------------------------------------------------------------------------------------
# Weighted residuals. One function object per (model, jac, weighting) so that the compiled
# solve of least_squares (cached on the function's identity) is reused across calls.
# ------------------------------------------------------------------------------------------

def _whiten(weighting: str, values, weight, rows: bool):
    """Apply the weighting to residuals (``rows=False``: ydata's shape) or to the rows of a
    Jacobian (``rows=True``: ``(m, n)``, rows in the ravel order of ydata)."""
    if weighting == "std":  # weight = 1 / sigma, ydata's shape
        return values * weight.reshape(-1)[:, None] if rows else values * weight
    # "cov": weight is the lower Cholesky factor L of the covariance; whitened = L^{-1} values.
    if rows:
        return solve_triangular(weight, values, lower=True)
    return solve_triangular(weight, values.reshape(-1), lower=True).reshape(values.shape)


@functools.lru_cache(maxsize=256)
def _residual_function(model: Callable, weighting: str) -> Callable:
    def residuals(params, xdata, ydata, weight):
        return _whiten(weighting, model(xdata, params) - ydata, weight, rows=False)

    return residuals


@functools.lru_cache(maxsize=256)
def _jacobian_function(jac: Callable, weighting: str) -> Callable:
    def jacobian(params, xdata, ydata, weight):
        J = jnp.asarray(jac(xdata, params))
        return _whiten(weighting, J, weight, rows=True)

    return jacobian


# ------------------------------------------------------------------------------------------
# Input checks (host side; skipped for traced values under an outer jit/vmap)
# ------------------------------------------------------------------------------------------

def _int_array(value: int):
    """``jnp.asarray(value)`` (weakly typed) by a transfer, not a compiled conversion."""
    return jax.device_put(int(value))


@functools.lru_cache(maxsize=None)
def _least_squares_keywords() -> frozenset:
    """The keyword arguments :func:`jacopt.least_squares` accepts."""
    return frozenset(name for name, p in inspect.signature(least_squares).parameters.items()
                     if p.kind is not inspect.Parameter.VAR_KEYWORD)


def _as_data(value, name: str, dtype):
    """``value`` as an array of ``dtype``: integers converted, other floats refused (NumPy
    float64 while x64 is off runs in float32 with the one PrecisionWarning, as JAX runs it).
    Data that is not a JAX array stays in NumPy: an eager JAX conversion would compile a small
    program in every new process, which the cache of compiled solves cannot serve."""
    try:
        arr = value if isinstance(value, jax.Array) else as_float32_if_needed(
            np.asarray(value), name)
    except TypeError as exc:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}.") from exc
    kind = np.dtype(arr.dtype).kind
    if kind in "biu":
        arr = arr.astype(dtype)
    elif kind == "c":
        raise TypeError(f"{name} is complex; jacopt fits real data.")
    elif kind != "f":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}.")
    elif arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but p0 has dtype {np.dtype(dtype)}; "
                        f"jacopt never casts silently: give p0 and the data the same dtype.")
    if not is_traced(arr) and not all_finite(arr):
        raise ValueError(f"{name} contains non-finite values (NaN or inf); remove or mask those "
                         f"points first.")
    return arr


def _check_xdata(xdata, length: int):
    def convert(leaf):
        if isinstance(leaf, (jax.Array, np.ndarray)) or np.isscalar(leaf):
            if isinstance(leaf, np.ndarray):
                leaf = as_float32_if_needed(leaf, "xdata")
            arr = leaf if isinstance(leaf, (jax.Array, np.ndarray)) else jnp.asarray(leaf)
            if (not is_traced(arr) and jnp.issubdtype(arr.dtype, jnp.inexact)
                    and not all_finite(arr)):
                raise ValueError("xdata contains non-finite values (NaN or inf).")
            return arr
        return leaf

    xdata = jax.tree_util.tree_map(convert, numbers_as_array(xdata))
    if isinstance(xdata, (jax.Array, np.ndarray)) and xdata.ndim >= 1:
        if length not in (xdata.shape[0], xdata.shape[-1]):
            raise ValueError(
                f"xdata has shape {xdata.shape} but ydata has {length} points along its first "
                f"axis: the first or last axis of xdata must have length {length} "
                f"(len(ydata))."
            )
    return xdata


def _check_sigma(sigma, ydata, dtype):
    """Return (weighting, weight): 'std'/(1/sigma) (ones for no sigma), 'cov'/cholesky(sigma)."""
    if sigma is None:  # unit weights: the same compiled solve as 1-D sigma
        return "std", np.ones(ydata.shape, ydata.dtype)
    sigma = _as_data(sigma, "sigma", dtype)
    m = ydata.size
    if sigma.ndim == 0:  # one standard deviation for every point (as SciPy accepts)
        sigma = (jnp if isinstance(sigma, jax.Array) else np).broadcast_to(sigma, ydata.shape)
    if sigma.shape == ydata.shape or (sigma.ndim == 1 and sigma.shape[0] == m):
        if not is_traced(sigma) and not np.all(np.asarray(sigma) > 0):  # NumPy: see all_finite
            raise ValueError("sigma must be positive: the standard deviation of each ydata point.")
        return "std", (1.0 / sigma).reshape(ydata.shape)
    if sigma.shape == (m, m):
        chol = jnp.linalg.cholesky(sigma)
        if not is_traced(chol) and not all_finite(chol):
            raise ValueError("sigma (2-D, the covariance of ydata) is not positive definite.")
        return "cov", chol
    raise ValueError(
        f"sigma has shape {sigma.shape}; expected ydata's shape {ydata.shape} (standard "
        f"deviations) or ({m}, {m}) (the covariance matrix of the flattened ydata)."
    )


def _check_mask(mask, ydata, dtype):
    """``(mask, m)``: ``mask`` (``ydata``'s shape, or one value per row ``(len(ydata),)``, of 0s
    and 1s, e.g. from :func:`jacopt.shard_rows`) in ``p0``'s dtype, shaped to multiply
    ``ydata``'s weights, and ``m``, the number of data it keeps (an int, traced under an outer
    ``jit``/``vmap``)."""
    if not isinstance(mask, jax.Array):
        mask = np.asarray(mask)
    if mask.shape not in (tuple(ydata.shape), tuple(ydata.shape[:1])):
        raise ValueError(f"mask has shape {mask.shape}; expected ydata's shape {ydata.shape} "
                         f"or one value per row ({ydata.shape[0]},).")
    kind = np.dtype(mask.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"mask must hold 0s and 1s (or booleans), got dtype {mask.dtype}.")
    per_row = ydata.size // mask.size
    xp = np if isinstance(mask, np.ndarray) else jnp
    kept = xp.sum(mask != 0) * per_row
    if not is_traced(mask):
        if not bool(xp.all((mask == 0) | (mask == 1))):
            raise ValueError("mask must hold 0s and 1s: 1 for the data to fit, 0 for padding.")
        kept = int(kept)
        if kept == 0:
            raise ValueError("mask is 0 everywhere: no data to fit.")
    mask = mask.astype(dtype).reshape(mask.shape + (1,) * (ydata.ndim - mask.ndim))
    return mask, kept


def _takes_two(model) -> bool:
    """Whether ``model`` can be called with two positional arguments (True when its
    signature cannot be read)."""
    try:
        inspect.signature(model).bind(None, None)
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def _note_scipy_signature(exc: BaseException, model) -> None:
    """Add a note to the user's own error (type and traceback kept) when ``model`` reads like
    SciPy's ``f(x, *p)`` or ``f(x, a, b=1.0)``: it was called with all parameters in one
    argument, which such models take apart (``a, b = p``) or broadcast wrongly."""
    try:
        params = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) > 2 or any(p.kind is p.VAR_POSITIONAL for p in params):
        note = ("jacopt.curve_fit calls the model as model(xdata, params), all parameters in "
                "one array (or pytree) like p0; a SciPy model f(x, *p) or f(x, a, b, ...) is "
                "lambda x, p: f(x, *p).")
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10: kept where 3.11's traceback would print it
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def _model_output(model, xdata, p0):
    """``jax.eval_shape(model, xdata, p0)``, remembered per (model, structure, shapes, dtypes
    and weak types) when every input leaf is a concrete array: ``eval_shape`` itself, even with
    its trace cached, cost more than a small fit's whole solve (the compiled solve is cached on
    the same things)."""
    leaves = jax.tree_util.tree_leaves((xdata, p0))
    if is_traced(leaves) or not all(isinstance(leaf, (np.ndarray, jax.Array)) for leaf in leaves):
        return jax.eval_shape(model, xdata, p0)
    treedef = jax.tree_util.tree_structure((xdata, p0))
    avals = tuple((tuple(leaf.shape), np.dtype(leaf.dtype),
                   bool(getattr(leaf, "weak_type", False))) for leaf in leaves)
    try:
        hash((model, treedef, avals))
    except TypeError:  # an unhashable model: check it every time
        return jax.eval_shape(model, xdata, p0)
    return _model_output_cached(model, treedef, avals)


@functools.lru_cache(maxsize=256)
def _model_output_cached(model, treedef, avals):
    x_spec, p_spec = jax.tree_util.tree_unflatten(
        treedef, [jax.ShapeDtypeStruct(shape, dtype, weak_type=weak)
                  for shape, dtype, weak in avals])
    return jax.eval_shape(model, x_spec, p_spec)


# ------------------------------------------------------------------------------------------
# Covariance
# ------------------------------------------------------------------------------------------

def _robust_jacobian(result: LeastSquaresResult, loss, f_scale):
    """The Jacobian whose Gram matrix is the Gauss-Newton Hessian of the robust cost (SciPy's
    ``res.jac`` for a loss): rows scaled by ``sqrt(rho' + 2 z rho'')``."""
    from jacopt.losses import get_loss  # the solver's loss module (imported when needed)

    J = result.jac
    loss = get_loss(loss)
    if loss.is_linear:
        return J
    r, _ = ravel_pytree(result.residuals)
    _, row_weight = loss.weights(r, jnp.asarray(f_scale, r.dtype))
    return row_weight[:, None] * J


def _triangle(J, rows):
    """The triangular factor ``R`` of ``J = Q R`` (``R^T R = J^T J``, the same singular values
    and right singular vectors as ``J``): one QR on one device, or, with ``J``'s rows split over
    devices (``rows``), a TSQR (:func:`jacopt.linalg.tsqr_r`, Demmel et al. 2012) whose local
    QRs run where the rows live, so only ``N n x n`` triangles move between devices."""
    if rows is not None:
        J = tsqr_r(J, rows.mesh, rows.axis)
    return jnp.linalg.qr(J, mode="r")


@functools.partial(cpu_fast_jit, static_argnames=("absolute_sigma", "rows"))
def _covariance(J, cost, absolute_sigma: bool, params=None, m=None, rows=None):
    """(pcov, identifiable, rank, valid, residual_variance, stderr) from the weighted Jacobian,
    ``stderr`` flat or, given ``params``, shaped like them: one compiled function (run eagerly,
    its dozen small operations cost about ten times the whole Misra1a-sized solve).

    ``m``: the number of data (default ``J``'s rows; fewer when masked rows pad the data) for
    the degrees of freedom ``m - n`` and SciPy's cutoff ``eps * max(m, n) * s_max``, applied to
    the singular values of ``J``'s ``R`` factor (:func:`_triangle`, split over devices as
    ``rows`` says): ``(J^T J)^+ = (R^T R)^+``, and the SVD of ``R`` costs ``O(n^3)`` after an
    ``O(m n^2)`` QR that never gathers ``J``'s rows."""
    n = J.shape[1]
    m = J.shape[0] if m is None else m
    dof = jnp.asarray(m - n, J.dtype)
    finite = jnp.all(jnp.isfinite(J))
    rcond = jnp.finfo(J.dtype).eps * jnp.maximum(jnp.asarray(m, J.dtype), n)
    pinv = gram_pinv(_triangle(jnp.where(finite, J, 0), rows), rcond)
    residual_variance = jnp.where(dof > 0, 2 * cost / jnp.where(dof > 0, dof, 1), jnp.nan)
    scale = jnp.ones((), J.dtype) if absolute_sigma else residual_variance
    estimable = finite & jnp.isfinite(scale)  # scale is NaN when dof <= 0 or cost is not finite
    pcov = jnp.where(estimable, pinv.inverse * scale, jnp.inf)
    identifiable = pinv.identifiable & estimable
    valid = estimable & (pinv.rank == n)
    stderr = jnp.where(identifiable, jnp.sqrt(jnp.abs(jnp.diagonal(pcov))), jnp.inf)
    if params is not None:
        stderr = ravel_pytree(params)[1](stderr)
    return pcov, identifiable, pinv.rank, valid, residual_variance, stderr


def _warn(fit: CurveFitResult, p0, m: int, n: int, absolute_sigma: bool):
    """Host-side warnings for a concrete (unbatched) result (parameters named after ``p0``)."""
    result = fit.result
    if not bool(result.success):
        warnings.warn(f"curve_fit: the solve did not converge: {result.message} "
                      f"(status {result.status_name}); the result holds the best point found.",
                      UserWarning, stacklevel=3)
    if bool(fit.covariance_valid):
        return
    if not bool(jnp.all(jnp.isfinite(result.jac))):
        reason = "the Jacobian at the solution is not finite; every entry of pcov is inf"
    elif not absolute_sigma and not bool(jnp.isfinite(result.cost)):
        reason = "the residuals at the solution are not finite; every entry of pcov is inf"
    elif not absolute_sigma and m <= n:
        reason = (f"there are m={m} data points for n={n} parameters: the residual variance "
                  f"needs m > n (or pass absolute_sigma=True with known sigma); every entry "
                  f"of pcov is inf")
    else:
        labels = ["p0" + label for label in TreeIndex(p0).labels()]
        bad = [labels[i] for i in np.flatnonzero(~np.asarray(fit.identifiable))]
        reason = (f"the Jacobian has rank {int(fit.rank)} < {n} parameters: "
                  f"{', '.join(bad) or 'some combinations'} are not identifiable (only "
                  f"combinations of them are determined by the data); pcov is the "
                  f"pseudo-inverse, valid for identifiable combinations, and their stderr is inf")
    warnings.warn(f"Covariance of the parameters could not be estimated: {reason}.",
                  CovarianceWarning, stacklevel=3)


# ------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------

def curve_fit(model: Callable, xdata, ydata, p0=None, *, sigma=None, absolute_sigma: bool = False,
              bounds=None, solver="lm", jac=None, mask=None,
              **least_squares_kwargs) -> CurveFitResult:
    """Fit ``model(xdata, params)`` to ``ydata`` by weighted nonlinear least squares.

    Minimises ``sum(((model(xdata, p) - ydata) / sigma)**2)`` (1-D ``sigma``), or
    ``r^T sigma^{-1} r`` with ``r = model(xdata, p) - ydata`` (2-D ``sigma``, whitened by its
    Cholesky factor), with :func:`jacopt.least_squares`, then estimates the covariance of the
    parameters (module docstring).

    Args:
      model: ``model(xdata, params) -> array`` of ``ydata``'s shape, traceable by JAX;
        ``params`` has ``p0``'s structure. A SciPy model ``f(x, *p)`` is
        ``lambda x, p: f(x, *p)``.
      xdata: the independent variable: an array (its first or last axis of length
        ``len(ydata)``, like SciPy's ``(M,)`` or ``(k, M)``) or any pytree the model accepts.
      ydata: the observations, an array of ``m`` values (any shape), finite.
      p0: the start, an array or pytree of floats (required: its structure defines the
        parameters; a list of numbers is a 1-D array, as in SciPy).
      sigma: ``None`` (unit weights), standard deviations of ``ydata`` (``ydata``'s shape,
        ``(m,)``, or a scalar for every point), or the ``(m, m)`` covariance matrix of the
        flattened ``ydata``.
      absolute_sigma: ``sigma`` is in absolute units: do not rescale the covariance by the
        residual variance.
      bounds: ``(lower, upper)`` on the parameters, scalars or pytrees like ``p0``, or a
        :class:`scipy.optimize.Bounds` (as in :func:`jacopt.least_squares`).
      solver: ``"lm"`` (default), ``"gn"``, ``"dogleg"`` or a solver instance.
      jac: optional ``jac(xdata, params) -> (m, n)`` Jacobian of the model's flattened output
        with respect to the flattened parameters; default automatic differentiation.
      mask: optional 0/1 array of ``ydata``'s shape (or one value per row): points with 0
        are padding (as :func:`jacopt.shard_rows` returns for data split over devices). Their
        weighted residuals are multiplied by 0 (the model must be finite there) and they do
        not count in ``m``, so the parameters, ``dof`` and covariance are those of the fit to
        the points with 1. 1-D ``sigma`` only.
      **least_squares_kwargs: passed to :func:`jacopt.least_squares` (``loss``, ``f_scale``,
        ``x_scale``, ``ftol``, ``xtol``, ``gtol``, ``max_steps``, ``history``, ``verbose``...).

    Returns:
      A :class:`CurveFitResult`: ``popt, pcov = result`` as in SciPy, plus ``stderr``,
      ``identifiable``, ``rank``, ``covariance_valid``, ``residual_variance``, ``dof`` and the
      :class:`jacopt.LeastSquaresResult` as ``result``. Works under ``jit`` and ``vmap``
      (warnings are only issued on concrete, unbatched results).

    Cost: the solve, plus one QR of the ``(m, n)`` Jacobian (split over devices with its
    rows), O(m n^2), and an SVD of its ``n x n`` factor.
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(xdata, params), got "
                        f"{type(model).__name__}.")
    if jac is not None and not callable(jac):
        raise TypeError(f"jac must be None (JAX differentiates the model) or callable as "
                        f"jac(xdata, params), got {jac!r}; SciPy's '2-point', '3-point' and "
                        f"'cs' have no use here: leave jac out.")
    for key in least_squares_kwargs:
        if key in ("args", "fun", "x0"):
            raise TypeError(f"curve_fit does not take {key!r}: the residuals are built from "
                            f"model, xdata and ydata.")
        if key not in _least_squares_keywords():
            _scipy_keywords.refuse("curve_fit", [key])
    if p0 is None:
        raise ValueError("p0 is required: its structure defines the parameters (SciPy's "
                         "default of ones reads the model's signature, which model(xdata, "
                         "params) does not give); pass e.g. p0=jnp.ones(n).")
    p0 = as_float_tree(p0, "p0", host=True)
    # promoted as ravel_pytree promotes (it ignores weak types)
    dtype = jnp.result_type(*(leaf.dtype for leaf in jax.tree_util.tree_leaves(p0)))
    n = sum(int(np.prod(np.shape(leaf))) for leaf in jax.tree_util.tree_leaves(p0))

    ydata = _as_data(ydata, "ydata", dtype)
    if ydata.ndim == 0 or ydata.size == 0:
        raise ValueError(f"ydata must be a non-empty array of observations, got shape "
                         f"{ydata.shape}.")
    m = int(ydata.size)
    xdata = _check_xdata(xdata, int(ydata.shape[0]))
    weighting, weight = _check_sigma(sigma, ydata, dtype)
    weight = placed_like(weight, ydata)  # unit weights beside ydata split over devices
    m_data = m
    if mask is not None:  # padding (shard_rows): zero weight, and not counted in m
        if weighting == "cov":
            raise ValueError("mask takes 1-D sigma (standard deviations) only: with a 2-D "
                             "sigma, drop the padded points from ydata and sigma instead.")
        mask, m_data = _check_mask(mask, ydata, dtype)
        weight = weight * mask
    try:
        out = _model_output(model, xdata, p0)
    except TRACING_ERRORS as exc:
        raise tracing_error(exc, "model") from exc
    except TypeError as exc:  # the user's own errors propagate unchanged; a SciPy signature
        if _takes_two(model):  # f(x, a, b, c) called as model(xdata, params) gets a hint
            _note_scipy_signature(exc, model)
            raise
        raise TypeError(f"model(xdata, p0) failed: {exc}. The model is called as "
                        f"model(xdata, params); a SciPy model f(x, *p) is "
                        f"lambda x, p: f(x, *p).") from exc
    except Exception as exc:
        _note_scipy_signature(exc, model)
        raise
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(ydata.shape):
        got = getattr(out, "shape", type(out).__name__)
        try:
            joint = np.broadcast_shapes(tuple(got), tuple(ydata.shape))
        except (TypeError, ValueError):
            joint = None
        if joint is not None and joint not in (tuple(got), tuple(ydata.shape)):
            raise outer_broadcast_error("the residual model(xdata, p0) - ydata", joint,
                                        ("model(xdata, p0)", got), ("ydata", ydata.shape))
        raise ValueError(f"model(xdata, p0) returns shape {got} but ydata has shape "
                         f"{ydata.shape}; they must match.")

    if solver == "lm-matrix-free" or type(solver).__name__ == "MatrixFreeLevenbergMarquardt":
        raise ValueError("solver: curve_fit needs the Jacobian at the solution for the "
                         "covariance, which the matrix-free solver never forms; use 'lm', "
                         "'gn' or 'dogleg'.")
    fun = _residual_function(model, weighting)
    residual_jac = None if jac is None else _jacobian_function(jac, weighting)
    result = least_squares(fun, p0, args=(xdata, ydata, weight), solver=solver,
                           jac=residual_jac, bounds=bounds, _x0_name="p0",
                           **least_squares_kwargs)

    J = _robust_jacobian(result, least_squares_kwargs.get("loss", "linear"),
                         least_squares_kwargs.get("f_scale", 1.0))
    pcov, identifiable, rank, valid, residual_variance, stderr = _covariance(
        J, result.cost, absolute_sigma=bool(absolute_sigma), params=result.params, m=m_data,
        rows=rows_of(J))
    dof = _int_array(m_data - n) if isinstance(m_data, int) else m_data - n
    fit = CurveFitResult(
        params=result.params, covariance=pcov, stderr=stderr,
        identifiable=identifiable, rank=rank, covariance_valid=valid,
        residual_variance=residual_variance, dof=dof, result=result)
    if not is_traced(valid) and jnp.ndim(valid) == 0:
        _warn(fit, p0, m_data, n, bool(absolute_sigma))
    return fit
