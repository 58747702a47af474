"""Bound-constrained test problems with known minima, for ``minimize(bounds=...)``.

- ``mgh_*``: nine Moré-Garbow-Hillstrom problems (MGH numbers 3, 4, 5, 7, 9, 12, 14, 16 and
  18) with the bounds and constrained minima of
  D. M. Gay, "A trust region approach to linearly constrained optimization", Lecture Notes in
  Mathematics 1066, 1984, as listed on A. Neumaier's bounds page and used by Ceres Solver's
  ``examples/more_garbow_hillstrom.cc``. ``f = sum(r**2)`` (MGH's ``F``); solved when the log
  relative error of ``f`` against the printed minimum is at least 4 (Ceres' test; absolute
  when the minimum is 0). The residuals are :mod:`jacopt.problems.test_functions`' (MGH's own
  forms), plus Brown-Dennis and Box 3-D with ``m = 3`` here (Gay's minimum is that of
  ``m = 3``, as in Ceres; with MGH's ``m = 10`` the bounded minimum is ``1.1435e-4``).
  Gay's Gulf problem is left out: its published forms disagree (MGH misprint the residual).
- ``rosenbrock_*``: (extended) Rosenbrock with the odd components held ``<= 0.5``: each pair
  ends at ``(0.5, 0.25)`` with ``f = 0.25`` on that bound (the gradient there presses on it).
- ``box_quadratic_*``: ``f = x^T A x / 2 - b^T x`` on ``[-1, 1]^n``, ``A`` with a chosen
  condition number, built around a chosen minimiser: a third of the components on each bound
  and the gradient ``A x* - b`` set to strictly complementary multipliers there (zero on the
  free third), so ``x*``, ``f*`` and the active set are exact.

A run is solved when its final value passes :func:`solved`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

from jacopt.problems import test_functions as tf

__all__ = ["BoundedProblem", "get", "names", "solved", "box_quadratic"]


@dataclasses.dataclass(frozen=True, eq=False)
class BoundedProblem:
    """``fun`` (pure JAX, ``(n,) -> scalar``), start ``x0``, bounds ``lower``/``upper`` (numpy
    ``(n,)``, ``+-inf`` for none), the minimum ``f_star``, and where known the minimiser
    ``x_star`` and its active set ``active`` (-1 on the lower bound, +1 on the upper, 0 free).
    ``lre``: solved means a log relative error of ``f`` of at least this (None: ``f <= f_star +
    1e-8 max(1, |f_star|)``, for the exact minima)."""

    __test__ = False

    name: str
    fun: Callable
    x0: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    f_star: float
    source: str
    x_star: np.ndarray | None = None
    active: np.ndarray | None = None
    lre: float | None = None


def solved(problem: BoundedProblem, f: float) -> bool:
    """Whether a final value ``f`` counts as reaching the problem's minimum."""
    f = float(f)
    if not math.isfinite(f):
        return False
    if problem.lre is None:
        return f <= problem.f_star + 1e-8 * max(1.0, abs(problem.f_star))
    scale = abs(problem.f_star) if problem.f_star != 0 else 1.0
    return f <= problem.f_star + 10.0 ** (-problem.lre) * scale


def brown_dennis_residual(x):
    """Brown and Dennis [16], n = 4, m = 20: ``r_i = (x1 + t_i x2 - exp(t_i))^2 +
    (x3 + x4 sin(t_i) - cos(t_i))^2``, ``t_i = i / 5``."""
    t = jnp.arange(1, 21, dtype=x.dtype) / 5.0
    return (x[0] + t * x[1] - jnp.exp(t)) ** 2 + (x[2] + x[3] * jnp.sin(t) - jnp.cos(t)) ** 2


def box_3d_m3_residual(x):
    """Box three-dimensional [12] with m = 3: ``r_i = exp(-t_i x1) - exp(-t_i x2)
    - x3 (exp(-t_i) - exp(-10 t_i))``, t_i = 0.1 i."""
    t = 0.1 * jnp.arange(1, 4, dtype=x.dtype)
    return jnp.exp(-t * x[0]) - jnp.exp(-t * x[1]) - x[2] * (jnp.exp(-t) - jnp.exp(-10.0 * t))


def _sum_of_squares(residual):
    def fun(x):
        r = residual(x)
        return jnp.sum(r * r)

    return fun


_INF = math.inf
# name: (objective, x0, lower, upper, constrained minimum F, MGH number)
_GAY = {
    "powell_badly_scaled": (tf.powell_badly_scaled, (0.0, 1.0), (0.0, 1.0), (1.0, 9.0),
                            0.15125900e-9, 3),
    "brown_badly_scaled": (tf.brown_badly_scaled, (1.0, 1.0), (0.0, 3e-5), (1e6, 100.0),
                           0.784e3, 4),
    "beale": (tf.beale, (1.0, 1.0), (0.6, 0.5), (10.0, 100.0), 0.0, 5),
    "helical_valley": (tf.helical_valley, (-1.0, 0.0, 0.0), (-100.0, -1.0, -1.0),
                       (0.8, 1.0, 1.0), 0.99042212, 7),
    "gaussian": (tf.gaussian, (0.4, 1.0, 0.0), (0.398, 1.0, -0.5), (4.2, 2.0, 0.1),
                 0.11279300e-7, 9),
    "box_3d": (_sum_of_squares(box_3d_m3_residual), (0.0, 10.0, 20.0), (0.0, 5.0, 0.0),
               (2.0, 9.5, 20.0), 0.30998153e-5, 12),
    "wood": (tf.wood, (-3.0, -1.0, -3.0, -1.0), (-100.0,) * 4, (0.0, 10.0, 100.0, 100.0),
             0.15567008e1, 14),
    "brown_dennis": (_sum_of_squares(brown_dennis_residual), (25.0, 5.0, -5.0, -1.0),
                     (-10.0, 0.0, -100.0, -20.0), (100.0, 15.0, 0.0, 0.2), 0.88860479e5, 16),
    "biggs_exp6": (tf.biggs_exp6, (1.0, 2.0, 1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
                   (2.0, 8.0, 1.0, 7.0, 5.0, 5.0), 0.53209865e-3, 18),
}


def _array(values):
    a = np.array(values, dtype=np.float64)
    a.setflags(write=False)
    return a


def _gay(name):
    fun, x0, lower, upper, f_star, number = _GAY[name]
    return BoundedProblem(name=f"mgh_{name}", fun=fun, x0=_array(x0), lower=_array(lower),
                          upper=_array(upper), f_star=f_star, lre=4.0,
                          source=f"MGH [{number}] with Gay's (1984) bounds")


def _rosenbrock(n):
    odd = np.arange(n) % 2 == 0
    x_star = np.where(odd, 0.5, 0.25)
    return BoundedProblem(
        name="rosenbrock_bounded" if n == 2 else f"extended_rosenbrock_bounded_{n}",
        fun=tf.rosenbrock, x0=_array(np.tile([-1.2, 1.0], n // 2)),
        lower=_array(np.full(n, -_INF)), upper=_array(np.where(odd, 0.5, _INF)),
        f_star=0.25 * n / 2, x_star=_array(x_star), active=_array(np.where(odd, 1, 0)),
        source="MGH [1]/[21] with x_odd <= 0.5")


def box_quadratic(dim: int, condition_number: float, seed: int = 0) -> BoundedProblem:
    """``x^T A x / 2 - b^T x`` on ``[-1, 1]^dim`` with a known minimiser (module docstring).
    ``A = Q diag(lam) Q^T``, ``lam`` log-even in ``[1, condition_number]``; multipliers of
    size uniform in ``[0.1, 1]`` times the mean eigenvalue; start 0."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    lam = np.logspace(0.0, math.log10(condition_number), dim)
    a = (q * lam) @ q.T
    a = 0.5 * (a + a.T)
    active = rng.permutation(np.arange(dim) % 3 - 1)  # -1, 0, +1 in thirds
    x_star = np.where(active == 0, rng.uniform(-0.9, 0.9, dim), active.astype(float))
    size = rng.uniform(0.1, 1.0, dim) * lam.mean()
    grad_star = np.where(active == -1, size, np.where(active == 1, -size, 0.0))
    b = a @ x_star - grad_star
    f_star = float(0.5 * x_star @ a @ x_star - b @ x_star)
    a_c, b_c = _array(a), _array(b)

    def fun(x):
        return 0.5 * x @ (jnp.asarray(a_c, x.dtype) @ x) - jnp.asarray(b_c, x.dtype) @ x

    exponent = round(math.log10(condition_number))
    return BoundedProblem(
        name=f"box_quadratic_n{dim}_cond1e{exponent}", fun=fun, x0=_array(np.zeros(dim)),
        lower=_array(np.full(dim, -1.0)), upper=_array(np.full(dim, 1.0)), f_star=f_star,
        x_star=_array(x_star), active=_array(active),
        source=f"convex quadratic on [-1, 1]^{dim}, condition {condition_number:g}, seed {seed}")


def _build():
    problems = [_gay(name) for name in _GAY]
    problems += [_rosenbrock(n) for n in (2, 10, 100)]
    problems += [box_quadratic(dim, cond) for dim in (20, 100) for cond in (1e2, 1e4, 1e6)]
    return {p.name: p for p in problems}


PROBLEMS = _build()


def names() -> tuple[str, ...]:
    return tuple(PROBLEMS)


def get(name: str) -> BoundedProblem:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise KeyError(f"unknown bounded problem {name!r}; known: {', '.join(PROBLEMS)}") from None
