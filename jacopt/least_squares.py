"""``jacopt.least_squares``: nonlinear least squares with SciPy's interface, solved as one XLA
computation.

Example::

    import jax, jax.numpy as jnp, jacopt
    jax.config.update("jax_enable_x64", True)

    def residuals(b, x, y):                       # b: parameters (any pytree)
        return y - b[0] * (1.0 - jnp.exp(-b[1] * x))

    res = jacopt.least_squares(residuals, jnp.array([500.0, 1e-4]), args=(x, y))
    res.params, res.cost, res.status_name, res.message

How a call runs: the inputs are checked on the host (bad input raises before any work), then
one cached, jitted function ravels ``x0`` and the residuals into flat vectors, runs the solver
in a single ``lax.while_loop`` (:mod:`jacopt._loop`) and packs the result back into pytrees.
The compiled solve is cached on ``(fun, jac, solver, loss, options, shapes and dtypes)``: calling
again with the same function object and new ``x0`` or ``args`` values does not recompile. (A
``lambda`` written inside a loop is a new function each time: define ``fun`` once.)

``least_squares`` itself works under ``jax.jit`` and ``jax.vmap`` (a batch of starts or of data
gives each member its own status; a member whose residuals turn NaN stops with
``Status.NONFINITE`` at its best finite point while the others finish).

Derivatives: with ``implicit_diff=True`` (default) ``params`` carries derivatives with respect
to ``args`` by the implicit function theorem on ``grad C(x*, args) = 0`` (``J^T r = 0`` for the
linear loss), see :mod:`jacopt._implicit`; ``x0`` gets a zero derivative. With bounds, the
components fixed at a bound get a zero derivative and the rule is applied to the others.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jacopt import _loop, _scipy_keywords
from jacopt._compile import cpu_fast_jit
from jacopt._implicit import hoist_closure, with_implicit_gradient
from jacopt._sharding import row_sharding
from jacopt._validate import (
    TRACING_ERRORS,
    check_args,
    check_outer_broadcast,
    check_verbose,
    is_traced,
    least_squares_bounds,
    least_squares_x0,
    least_squares_x_scale,
    resolve_solver,
    static_number,
    tracing_error,
    warn_float64_leaves,
)
from jacopt.losses import get_loss
from jacopt.results import LeastSquaresResult
from jacopt.solvers.dogleg import Dogleg
from jacopt.solvers.gauss_newton import GaussNewton
from jacopt.solvers.least_squares_problem import LeastSquaresProblem, LeastSquaresSolver
from jacopt.solvers.levenberg_marquardt import LevenbergMarquardt
from jacopt.solvers.matrix_free import MatrixFreeLevenbergMarquardt
from jacopt.solvers.schur_lm import SchurLevenbergMarquardt
from jacopt.solvers.sparse_lm import SparseLevenbergMarquardt, plan_for
from jacopt.status import is_success

SOLVERS = {
    "lm": LevenbergMarquardt,
    "levenberg_marquardt": LevenbergMarquardt,
    "gn": GaussNewton,
    "gauss_newton": GaussNewton,
    "dogleg": Dogleg,
    "lm-matrix-free": MatrixFreeLevenbergMarquardt,
    "lm-sparse": SparseLevenbergMarquardt,
    "lm-schur": SchurLevenbergMarquardt,
}
"""Names accepted by ``solver=`` (case-insensitive)."""

_BOUNDED_SOLVERS = (LevenbergMarquardt, GaussNewton, Dogleg, MatrixFreeLevenbergMarquardt)


def least_squares(
    fun,
    x0,
    *,
    args=(),
    solver="lm",
    jac=None,
    loss="linear",
    f_scale=1.0,
    bounds=None,
    x_scale=None,
    ftol=None,
    xtol=None,
    gtol=None,
    max_steps=None,
    history=False,
    verbose=0,
    implicit_diff=True,
    jac_sparsity=None,
    **scipy_keywords,
) -> LeastSquaresResult:
    """Minimise ``C(x) = 0.5 * sum(f_scale**2 * rho((r_i / f_scale)**2))`` with ``r =
    fun(x, *args)`` (``0.5 * sum(r**2)`` for the default linear loss), optionally inside a box.

    Args:
      fun: ``fun(params, *args)`` returning the residuals: an array or pytree of arrays with
        ``m >= 1`` elements in total, in ``x0``'s dtype (a scalar is an error: return the
        vector of residuals, not their sum of squares). Must be traceable by JAX. Compiled
        once per function and shapes, as by ``jax.jit``: data it reads from globals or object
        attributes are frozen at the first call; pass data that change through ``args``.
      x0: the start, an array or pytree of arrays (``n`` elements in total); finite. A list
        of numbers is a 1-D array and a lone number a 1-element array, as in SciPy.
      args: tuple of extra arguments of ``fun`` (arrays/pytrees; traced, so new values do not
        recompile).
      solver: ``"lm"`` (Levenberg-Marquardt, default), ``"gn"`` (Gauss-Newton with a line
        search), ``"dogleg"`` (Powell's dogleg), ``"lm-matrix-free"`` (inexact
        Levenberg-Marquardt that never forms J: LSQR or CG on Jacobian-vector products, for
        problems too large for an ``(m, n)`` matrix; ``jac`` must be ``None``), ``"lm-schur"``
        (Levenberg-Marquardt on a sparse ``J`` whose steps eliminate a block-diagonal group of
        unknowns by the Schur complement, e.g. bundle adjustment's points:
        :mod:`jacopt.solvers.schur_lm`; takes ``jac_sparsity``), or a solver
        instance from :mod:`jacopt.solvers` (e.g. ``LevenbergMarquardt(geodesic=True)``).
      jac: ``None`` (automatic differentiation: one linearisation of ``fun`` plus ``min(m, n)``
        JVPs or VJPs per evaluation, :func:`jacopt.jacobian`) or ``jac(params, *args)`` returning
        the ``(m, n)`` Jacobian of the flattened residuals with respect to the flattened
        parameters (ravel order of ``jax.flatten_util.ravel_pytree``).
      loss: ``"linear"``, ``"soft_l1"``, ``"huber"``, ``"cauchy"``, ``"arctan"`` (SciPy's) or a
        callable ``rho(z) -> (rho, rho', rho'')``; see :mod:`jacopt.losses`. With the losses
        that saturate (``"cauchy"``, ``"arctan"``) and residuals far above ``f_scale`` at the
        start, use ``"lm"`` (the default): the corrected Jacobian then has almost no curvature,
        and ``"gn"`` (no trust region) can crawl for its whole step budget, ``"dogleg"`` can
        wander far off; on a three-parameter exponential fit with ``f_scale`` 0.1 both ended
        far from the minimum that ``"lm"`` and SciPy's ``trf`` reach.
      f_scale: the residual scale of the robust loss (> 0).
      bounds: ``None`` or ``(lower, upper)``, each a scalar or a pytree like ``x0`` whose leaves
        are scalars or have the shape of ``x0``'s (``-inf``/``inf`` for no bound), or a
        :class:`scipy.optimize.Bounds` (its ``lb`` and ``ub``). Needs ``lower <= x0 <= upper``.
        Every built-in solver takes bounds.
      x_scale: the characteristic scale of each parameter: a positive scalar or a pytree like
        ``x0`` (the scaling is ``1 / x_scale``), or ``"jac"`` (Moré's scaling by the
        Jacobian's column norms, updated as their running maximum), or ``None`` (default): the
        solver's own, ``1.0`` for ``"lm"`` (as SciPy's ``trf`` and Optimistix; from far
        starts it solves more problems than ``"jac"``, which MINPACK and SciPy's ``lm`` use)
        and ``"jac"`` for the others (``solver.default_x_scale``).
      ftol, xtol, gtol: override the solver's tolerances (see the solver's docstring for the
        tests; ``None`` keeps the solver's defaults, which run to full precision).
      max_steps: the most iterations (each one trial step, accepted or rejected); default
        ``100 * (n + 1)``, at least 1000.
      history: record a :class:`jacopt.History` per iteration (inside the compiled loop).
      verbose: 0 silent, 1 one line at the end, 2 one row per iteration (printed from inside
        the compiled loop).
      implicit_diff: attach implicit derivatives of ``params`` with respect to ``args``.
      jac_sparsity: ``None`` (dense ``J``), ``"auto"`` (the pattern of the flat Jacobian is
        detected from ``fun``'s jaxpr, :func:`jacopt.jacobian_sparsity`) or the pattern: a
        boolean array, SciPy sparse matrix or BCOO of shape ``(m, n)`` (flattened residuals
        by flattened parameters), checked once against JVPs at ``x0``. Selects
        ``solver="lm-sparse"`` (:mod:`jacopt.solvers.sparse_lm`: LM whose steps come from
        LSQR on the sparse ``J``, computed from compressed JVPs, never an ``(m, n)`` matrix);
        ``solver`` must then be ``"lm"`` (the default), ``"lm-sparse"`` or ``"lm-schur"``, and
        ``jac`` None.
        ``solver="lm-sparse"`` without ``jac_sparsity`` detects the pattern.
      **scipy_keywords: SciPy's keywords with no counterpart here (``method``, ``max_nfev``,
        ``tr_solver``, ``tr_options``, ``diff_step``...) raise a
        ``TypeError`` that names what to use instead (:mod:`jacopt._scipy_keywords`).

    Returns:
      A :class:`jacopt.LeastSquaresResult` (``params``, ``cost``, ``residuals``, ``jac``,
      ``grad``, ``optimality``, ``success``, ``status``, counts, ``history``); ``jac`` is
      ``None`` for ``"lm-matrix-free"``, which never forms it.

    Raises (before any solving):
      ``ValueError`` naming the argument: non-finite ``x0``; ``bounds`` with ``lower > upper``
      or of the wrong shape (SciPy: "Inconsistent shapes"); ``x0`` outside the bounds; bad
      ``x_scale``/``f_scale``/``max_steps``; ``fun`` returning a scalar, or residuals that
      broadcast into a matrix (data of shape ``(m, 1)`` against ``(m,)``,
      :func:`jacopt._validate.check_outer_broadcast`); ``jac`` returning the wrong shape;
      unknown ``solver`` or ``loss`` names. ``TypeError`` for non-numeric or complex ``x0``
      or ``x_scale``, a non-tuple ``args``, ``fun`` returning a dtype different from
      ``x0``'s, ``fun`` calling NumPy on the parameters (use ``jax.numpy``), or a SciPy
      keyword. With x64 off, double-precision ``x0`` or NumPy float64 ``args`` run in float32
      with one :class:`jacopt.PrecisionWarning` per process.
    """
    x0_name = scipy_keywords.pop("_x0_name", "x0")  # curve_fit's p0
    if scipy_keywords:
        _scipy_keywords.refuse("least_squares", scipy_keywords)
    check_args(args)
    warn_float64_leaves(args, "args")
    if jac_sparsity is not None and isinstance(solver, str) and solver.strip().lower() in (
            "lm", "levenberg_marquardt"):
        solver = "lm-sparse"
    solver = resolve_solver(solver, SOLVERS, LeastSquaresSolver)
    sparse = isinstance(solver, SparseLevenbergMarquardt)
    if jac_sparsity is not None and not sparse:
        names = ", ".join(repr(k) for k, c in SOLVERS.items()
                          if issubclass(c, SparseLevenbergMarquardt))
        raise ValueError(f"jac_sparsity selects a sparse solver: use solver='lm' (the "
                         f"default, which becomes 'lm-sparse') or {names} with it, not "
                         f"{type(solver).__name__}, which forms a dense Jacobian or none.")
    if sparse and jac is not None:
        raise ValueError("jac must be None with jac_sparsity (solver='lm-sparse'): the sparse "
                         "Jacobian is computed from compressed JVPs of fun.")
    overrides = {k: static_number(v, k) for k, v in (("ftol", ftol), ("xtol", xtol),
                                                      ("gtol", gtol)) if v is not None}
    if overrides:
        solver = dataclasses.replace(solver, **overrides)
    if jac is not None and not callable(jac):
        raise TypeError(f"jac must be None (JAX differentiates fun) or a function jac(params, "
                        f"*args) returning the (m, n) Jacobian, got {jac!r}; SciPy's '2-point', "
                        f"'3-point', 'cs' and jac=True have no use here: leave jac out.")
    if jac is not None and isinstance(solver, MatrixFreeLevenbergMarquardt):
        raise ValueError("jac must be None for solver='lm-matrix-free': it applies J through "
                         "automatic differentiation (JVPs) and never forms the matrix.")
    loss = get_loss(loss)
    if is_traced(f_scale):  # a traced input of the solve (derivatives flow to it)
        if jnp.ndim(f_scale) != 0 or not jnp.issubdtype(jnp.result_type(f_scale), jnp.floating):
            raise ValueError(f"f_scale must be a positive floating scalar, got {f_scale!r}.")
    else:
        f_scale = static_number(f_scale, "f_scale", positive=True)

    x0, dtype, treedef, shapes = least_squares_x0(x0)
    n = int(sum(int(np.prod(shape)) for shape in shapes))
    if max_steps is None:
        max_steps = max(1000, 100 * (n + 1))
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) \
            or max_steps < 0:
        raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}.")

    lower = upper = None
    if bounds is not None:
        if not isinstance(solver, _BOUNDED_SOLVERS):
            names = ", ".join(repr(k) for k, c in SOLVERS.items()
                              if issubclass(c, _BOUNDED_SOLVERS))
            raise ValueError(f"bounds are supported by solver={names}, not "
                             f"{type(solver).__name__}.")
        lower, upper = least_squares_bounds(bounds, x0, treedef, shapes, dtype, x0_name)
    if x_scale is None:
        x_scale = solver.default_x_scale
    scale = least_squares_x_scale(x_scale, treedef, shapes, dtype)
    check_verbose(verbose)

    rows, args = row_sharding(args)  # data split by rows over devices (jacopt._sharding)
    try:
        (fun, jac), args = hoist_closure((fun, jac), x0, args)
        if sparse:  # the pattern and its colouring, on the host (jacopt.solvers.sparse_lm)
            solver = dataclasses.replace(solver, plan=plan_for(
                fun, x0, args, "auto" if jac_sparsity is None else jac_sparsity, solver.mode))
        return _solve(
            x0, args, lower, upper, scale, f_scale,
            solver=solver, fun=fun, jac=jac, loss=loss, max_steps=int(max_steps),
            history=bool(history), verbose=int(verbose), implicit_diff=bool(implicit_diff),
            batched=_under_vmap(x0, args, lower, upper, scale), rows=rows,
        )
    except TRACING_ERRORS as exc:
        raise tracing_error(exc, "fun") from exc


def _under_vmap(*trees) -> bool:
    """Whether ``least_squares`` was called inside ``jax.vmap`` (some input is a batch
    tracer); the solvers then pick kernels that batch well (:func:`jacopt.solvers.
    least_squares_problem.r_factor`). Answers are the same either way, up to rounding."""
    try:
        from jax._src.interpreters.batching import BatchTracer
    except ImportError:  # a JAX without that module: plain kernels
        return False
    return any(isinstance(leaf, BatchTracer) for leaf in jax.tree_util.tree_leaves(trees))




# ------------------------------------------------------------------------------------------
# The compiled solve.
# ------------------------------------------------------------------------------------------


def _flat_residual_function(fun, unravel, dtype):
    """``(x_flat, args) -> r_flat`` after checking, at trace time, what ``fun`` returns."""

    def residual(x, args):
        out = fun(unravel(x), *args)
        leaves = jax.tree_util.tree_leaves(out)
        if not leaves:
            raise ValueError("fun returned no residuals (an empty pytree).")
        if len(leaves) == 1 and jnp.ndim(leaves[0]) == 0:
            raise ValueError(
                "fun returned a scalar; least_squares needs the vector of residuals (m >= 1 "
                "entries), not their sum of squares. Use jacopt.minimize for a scalar objective."
            )
        for leaf in leaves:
            leaf_dtype = jnp.result_type(leaf)
            if leaf_dtype != dtype:
                raise TypeError(
                    f"fun returned residuals of dtype {leaf_dtype} for x0 of dtype {dtype}; "
                    "jacopt never casts silently: give x0 and the data the same dtype."
                )
        flat = ravel_pytree(out)[0]
        if flat.size == 0:
            raise ValueError("fun returned no residuals (zero elements).")
        return flat

    return residual


def _unraveler(shapes):
    """Flat ``(m,)`` -> the pytree of arrays described by ``shapes`` (ShapeDtypeStructs), in
    ``ravel_pytree`` order."""
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    offsets = np.cumsum([0] + sizes)

    def unravel(flat):
        parts = [flat[offsets[i]:offsets[i + 1]].reshape(leaf.shape)
                 for i, leaf in enumerate(leaves)]
        return jax.tree_util.tree_unflatten(treedef, parts)

    return unravel


def _flat_jacobian_function(jac, unravel, n, m):
    def jacobian(x, args):
        J = jnp.asarray(jac(unravel(x), *args))
        if J.shape != (m, n):
            raise ValueError(f"jac returned shape {J.shape}; expected (m, n) = ({m}, {n}), the "
                             "flattened residuals by the flattened parameters.")
        return J

    return jacobian


def _solve_impl(x0, args, lower, upper, x_scale, f_scale, *, solver, fun, jac, loss,
                max_steps, history, verbose, implicit_diff, batched=False, rows=None):
    x_flat, unravel = ravel_pytree(x0)
    dtype = x_flat.dtype
    residual = _flat_residual_function(fun, unravel, dtype)
    r_shape = jax.eval_shape(residual, x_flat, args)
    m, n = r_shape.shape[0], x_flat.shape[0]
    residual_shapes = jax.eval_shape(lambda x: fun(unravel(x), *args), x_flat)
    check_outer_broadcast(residual_shapes, args, "fun", "args")
    unravel_residuals = _unraveler(residual_shapes)
    jac_flat = None if jac is None else _flat_jacobian_function(jac, unravel, n, m)
    if jac_flat is not None:
        jax.eval_shape(jac_flat, x_flat, args)  # shape check at trace time
    f_scale = jnp.asarray(f_scale, dtype)

    # Everything traced that the solve depends on travels as one explicit argument (a custom_jvp
    # rule cannot close over tracers); derivatives flow to args and f_scale.
    data = (args, lower, upper, x_scale, f_scale)

    def problem_for(d):
        a, lo, up, xs, fs = d
        return LeastSquaresProblem(residual, jac_flat, a, loss, fs, lo, up, xs, batched, rows)

    title = (f"jacopt.least_squares ({type(solver).__name__}, loss {loss.name}, m = {m}, "
             f"n = {n})")

    def solve(x_start, d):
        out = _loop.run(solver, problem_for(d), x_start, max_steps=max_steps, history=history,
                        verbose=verbose, title=title)
        return out.state.point.x, out

    if implicit_diff:
        def pinned(x, d):
            """Components fixed at a bound (Bertsekas' active set at ``x``) and the bound each
            sits on: they move with the bounds only (a traced bound has derivative 1 there)."""
            problem = problem_for(d)
            xs, d_s = jax.lax.stop_gradient(x), jax.lax.stop_gradient(d)
            fixed_problem = problem_for(d_s)
            g = jax.grad(lambda v: fixed_problem.cost(residual(v, d_s[0])))(xs)
            # the side the gradient pushes against (it decides when lower == upper)
            on_upper = (xs >= fixed_problem.upper) & (g < 0)
            return (problem.active_set(xs, g),
                    jnp.where(on_upper, problem.upper, problem.lower))

        def objective(x, d):
            problem = problem_for(d)
            if problem.bounded:
                # the active components sit on their bounds: the objective sees the bounds
                # there (so a traced bound moves the free components through it), not x
                active, value = pinned(x, d)
                x = jnp.where(active, value, x)
            return problem.cost(residual(x, d[0]))

        x_star, out = with_implicit_gradient(
            solve, objective, pinned if lower is not None else None)(x_flat, data)
    else:
        x_star, out = solve(x_flat, data)

    state = out.state
    problem = problem_for(data)
    optimality = jnp.max(jnp.abs(problem.projected_gradient(state.point.x, state.point.grad)))
    status = out.status
    return LeastSquaresResult(
        params=unravel(x_star),
        cost=state.point.cost,
        residuals=unravel_residuals(state.point.r),
        jac=state.point.J,
        grad=unravel(state.point.grad),
        optimality=optimality,
        success=is_success(status),
        status=status,
        num_steps=out.num_steps,
        num_accepted=state.counters.num_accepted,
        num_rejected=state.counters.num_rejected,
        nfev=state.counters.nfev,
        njev=state.counters.njev,
        history=out.history,
    )


_STATIC = ("solver", "fun", "jac", "loss", "max_steps", "history", "verbose", "implicit_diff",
           "batched", "rows")

# The compiled solve (cached on the static arguments), with XLA's classic CPU fusion emitters
# when called directly (jacopt._compile).
_solve = cpu_fast_jit(_solve_impl, _STATIC)
