"""The Moré-Garbow-Hillstrom least-squares test set, as residual functions for far-start runs.

Source: J. J. Moré, B. S. Garbow and K. E. Hillstrom (1981), "Testing unconstrained
optimization software", ACM Trans. Math. Software 7(1):17-41 ("MGH"): problems 1-35, each
``F(x) = sum(r(x)**2)`` with a standard start ``x0`` and the optimal values the paper prints.
Sizes where MGH leave m or n free follow MINPACK's ``lmder`` test driver (Garbow, Hillstrom and
Moré, MINPACK project, 1980: ``ssqfcn``, ``initpt`` and the driver's reference output, as
shipped with cminpack's ``examples/``, ``ssq.data`` and ``ref/lmddrv*.ref``), else the sizes
asked for in MGH's tables (n = 10 for the variable-size problems, Watson n = 6, 9, 12).
Cross-checked against Ceres Solver's ``examples/more_garbow_hillstrom.cc``, which uses the
same ``F`` convention (it compares ``2 * final_cost``) but differs from MGH in three places
(Jennrich-Sampson started at (1, 1), Box 3-D with m = 3, Gulf with MGH's misprinted
``|y_i m i x2|``); this module follows MGH and MINPACK there. Where MGH misprint (Gulf), the
form whose printed minimiser (50, 25, 1.5) gives ``F = 0`` is used: ``|y_i - x2|``.

Convention: ``F = sum(r**2)`` (MGH's and MINPACK's, ``F = fnorm**2``), so jacopt's and SciPy's
``cost = 0.5 * sum(r**2) = F / 2``. Every ``f_star`` and every entry of ``optima`` is in ``F``.

Starts: :func:`starts` gives ``x0``, ``10 x0`` and ``100 x0``, MINPACK's ``initpt`` factor rule:
a start that is zero in every component (Watson) becomes ``factor * ones`` instead.

Accepted optima: ``optima[0]`` is the global minimum MGH print; further entries are the other
minima MGH print (Freudenstein-Roth, Bard and Kowalik-Osborne, the last two reached as
parameters run off to infinity; Biggs EXP6; Brown almost-linear), the one MINPACK's driver ends
at for a size MGH do not list (Chebyquad n = 1), and, marked in ``notes``, strict local minima
at finite points found here where a solver of the robustness benchmark ended (gradient below
1e-8, Hessian positive definite: Kowalik-Osborne, Trigonometric n = 10, Chebyquad n = 10): a
local method that ends there has done its job. Values approached only as parameters run off
to infinity, or on plateaus, that MGH do not list are not accepted (``notes`` name them).
:func:`solved` is the benchmark's judgement: within ``1e-4`` relative (plus ``1e-10``
absolute) of an accepted optimum, anything below the global one included.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

from jacopt.problems.test_functions import (
    _const,
    _index,
    bard_residual,
    beale_residual,
    biggs_exp6_residual,
    box_3d_residual,
    brown_badly_scaled_residual,
    freudenstein_roth_residual,
    gaussian_residual,
    helical_valley_residual,
    jennrich_sampson_residual,
    penalty_1_residual,
    powell_badly_scaled_residual,
    powell_singular_residual,
    rosenbrock_residual,
    variably_dimensioned_residual,
    wood_residual,
)

__all__ = ["MghProblem", "PROBLEMS", "FACTORS", "RTOL", "ATOL", "load", "starts", "solved"]

FACTORS = (1.0, 10.0, 100.0)
"""The multiples of ``x0`` each problem is started from (MGH section 3, MINPACK's driver)."""

RTOL = 1e-4
ATOL = 1e-10
""":func:`solved`'s tolerances: ``F <= f (1 + RTOL) + ATOL`` for an accepted optimum ``f``."""


# --------------------------------------------------------------------------------------------
# Residuals not in jacopt.problems.test_functions, x shape (n,) -> r shape (m,). MGH numbers
# in brackets; i runs from 1.
# --------------------------------------------------------------------------------------------


def meyer_residual(x):
    """Meyer [10], n = 3, m = 16: ``r_i = x1 exp(x2 / (t_i + x3)) - y_i``, t_i = 45 + 5 i."""
    t = 45.0 + 5.0 * _index(16, x)
    y = _const([34780., 28610., 23650., 19630., 16370., 13720., 11540., 9744., 8261., 7030.,
                6005., 5147., 4427., 3820., 3307., 2872.], x)
    return x[0] * jnp.exp(x[1] / (t + x[2])) - y


def gulf_residual(x):
    """Gulf research and development [11], n = 3, m = 99: ``r_i = exp(-|y_i - x2|^x3 / x1)
    - t_i``, t_i = i/100, ``y_i = 25 + (-50 ln t_i)^(2/3)`` (MGH print ``|y_i m i x2|``)."""
    t = _index(99, x) / 100.0
    y = 25.0 + (-50.0 * jnp.log(t)) ** (2.0 / 3.0)
    return jnp.exp(-jnp.abs(y - x[1]) ** x[2] / x[0]) - t


_KOWALIK_Y = (0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235,
              0.0246)
_KOWALIK_U = (4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625)


def kowalik_osborne_residual(x):
    """Kowalik and Osborne [15], n = 4, m = 11:
    ``r_i = y_i - x1 (u_i^2 + u_i x2) / (u_i^2 + u_i x3 + x4)``."""
    u = _const(_KOWALIK_U, x)
    return _const(_KOWALIK_Y, x) - x[0] * u * (u + x[1]) / (u * (u + x[2]) + x[3])


def brown_dennis_residual(x):
    """Brown and Dennis [16], n = 4, m = 20: ``r_i = (x1 + t_i x2 - exp(t_i))^2
    + (x3 + x4 sin t_i - cos t_i)^2``, t_i = i/5."""
    t = _index(20, x) / 5.0
    return (x[0] + t * x[1] - jnp.exp(t)) ** 2 + (x[2] + x[3] * jnp.sin(t) - jnp.cos(t)) ** 2


_OSBORNE_1_Y = (0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751,
                0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490,
                0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406)


def osborne_1_residual(x):
    """Osborne 1 [17], n = 5, m = 33: ``r_i = y_i - (x1 + x2 exp(-t_i x4)
    + x3 exp(-t_i x5))``, t_i = 10 (i - 1)."""
    t = 10.0 * (_index(33, x) - 1.0)
    return _const(_OSBORNE_1_Y, x) - (x[0] + x[1] * jnp.exp(-t * x[3])
                                      + x[2] * jnp.exp(-t * x[4]))


_OSBORNE_2_Y = (1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746,
                0.679, 0.608, 0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649,
                0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395,
                0.375, 0.372, 0.391, 0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653,
                0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559, 0.597, 0.625, 0.739,
                0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054)


def osborne_2_residual(x):
    """Osborne 2 [19], n = 11, m = 65: ``r_i = y_i - (x1 exp(-t_i x5) + x2 exp(-(t_i - x9)^2
    x6) + x3 exp(-(t_i - x10)^2 x7) + x4 exp(-(t_i - x11)^2 x8))``, t_i = (i - 1)/10."""
    t = (_index(65, x) - 1.0) / 10.0
    model = (x[0] * jnp.exp(-t * x[4]) + x[1] * jnp.exp(-(t - x[8]) ** 2 * x[5])
             + x[2] * jnp.exp(-(t - x[9]) ** 2 * x[6]) + x[3] * jnp.exp(-(t - x[10]) ** 2 * x[7]))
    return _const(_OSBORNE_2_Y, x) - model


def watson_residual(x):
    """Watson [20], 2 <= n <= 31, m = 31: for i <= 29, t_i = i/29,
    ``r_i = sum_{j>=2} (j-1) x_j t_i^(j-2) - (sum_j x_j t_i^(j-1))^2 - 1``;
    ``r_30 = x1``, ``r_31 = x2 - x1^2 - 1``."""
    n = x.shape[0]
    t = _index(29, x) / 29.0
    powers = t[:, None] ** jnp.arange(n, dtype=x.dtype)[None, :]  # t^(j-1), j = 1..n
    slope = powers[:, :-1] @ (_index(n - 1, x) * x[1:])
    value = powers @ x
    return jnp.concatenate([slope - value**2 - 1.0, jnp.stack([x[0], x[1] - x[0] ** 2 - 1.0])])


def penalty_2_residual(x):
    """Penalty function II [24], m = 2n, a = 1e-5: ``r_1 = x1 - 0.2``; for 2 <= i <= n
    ``r_i = sqrt(a) (exp(x_i/10) + exp(x_{i-1}/10) - y_i)``, y_i = exp(i/10) + exp((i-1)/10);
    for n < i < 2n ``r_i = sqrt(a) (exp(x_{i-n+1}/10) - exp(-1/10))``;
    ``r_2n = sum_j (n - j + 1) x_j^2 - 1``."""
    n = x.shape[0]
    root_a = math.sqrt(1e-5)
    i = _index(n, x)[1:]
    y = jnp.exp(i / 10.0) + jnp.exp((i - 1.0) / 10.0)
    return jnp.concatenate([
        x[:1] - 0.2,
        root_a * (jnp.exp(x[1:] / 10.0) + jnp.exp(x[:-1] / 10.0) - y),
        root_a * (jnp.exp(x[1:] / 10.0) - math.exp(-0.1)),
        jnp.sum((n + 1.0 - _index(n, x)) * x**2, keepdims=True) - 1.0,
    ])


def trigonometric_residual(x):
    """Trigonometric [26], m = n: ``r_i = n - sum_j cos x_j + i (1 - cos x_i) - sin x_i``."""
    n = x.shape[0]
    return n - jnp.sum(jnp.cos(x)) + _index(n, x) * (1.0 - jnp.cos(x)) - jnp.sin(x)


def brown_almost_linear_residual(x):
    """Brown almost-linear [27], m = n: ``r_i = x_i + sum_j x_j - (n + 1)`` for i < n,
    ``r_n = prod_j x_j - 1``."""
    n = x.shape[0]
    return jnp.concatenate([x[:-1] + jnp.sum(x) - (n + 1.0), jnp.prod(x, keepdims=True) - 1.0])


def _grid(x):
    """h = 1/(n+1) and t_i = i h, the mesh of problems 28 and 29."""
    h = 1.0 / (x.shape[0] + 1.0)
    return h, h * _index(x.shape[0], x)


def discrete_boundary_value_residual(x):
    """Discrete boundary value [28], m = n: ``r_i = 2 x_i - x_{i-1} - x_{i+1}
    + h^2 (x_i + t_i + 1)^3 / 2``, x_0 = x_{n+1} = 0."""
    h, t = _grid(x)
    padded = jnp.pad(x, 1)
    return 2.0 * x - padded[:-2] - padded[2:] + h**2 * (x + t + 1.0) ** 3 / 2.0


def discrete_integral_equation_residual(x):
    """Discrete integral equation [29], m = n: ``r_i = x_i + h [(1 - t_i) sum_{j<=i} t_j
    (x_j + t_j + 1)^3 + t_i sum_{j>i} (1 - t_j) (x_j + t_j + 1)^3] / 2``."""
    h, t = _grid(x)
    cube = (x + t + 1.0) ** 3
    lower = jnp.cumsum(t * cube)
    upper = jnp.sum((1.0 - t) * cube) - jnp.cumsum((1.0 - t) * cube)
    return x + h * ((1.0 - t) * lower + t * upper) / 2.0


def broyden_tridiagonal_residual(x):
    """Broyden tridiagonal [30], m = n: ``r_i = (3 - 2 x_i) x_i - x_{i-1} - 2 x_{i+1} + 1``,
    x_0 = x_{n+1} = 0."""
    padded = jnp.pad(x, 1)
    return (3.0 - 2.0 * x) * x - padded[:-2] - 2.0 * padded[2:] + 1.0


def broyden_banded_residual(x):
    """Broyden banded [31], m = n: ``r_i = x_i (2 + 5 x_i^2) + 1 - sum_{j in J_i} x_j (1 + x_j)``,
    ``J_i = {j != i: max(1, i - 5) <= j <= min(n, i + 1)}``."""
    n = x.shape[0]
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]  # j - i
    band = _const(((offset >= -5) & (offset <= 1) & (offset != 0)).astype(float), x)
    return x * (2.0 + 5.0 * x**2) + 1.0 - band @ (x * (1.0 + x))


def linear_full_rank_residual(x, m):
    """Linear function, full rank [32], m >= n: ``r_i = x_i - 2/m sum_j x_j - 1`` (i <= n),
    ``-2/m sum_j x_j - 1`` (i > n)."""
    return jnp.pad(x, (0, m - x.shape[0])) - 2.0 / m * jnp.sum(x) - 1.0


def linear_rank_1_residual(x, m):
    """Linear function, rank 1 [33], m >= n: ``r_i = i sum_j j x_j - 1``."""
    return _index(m, x) * jnp.sum(_index(x.shape[0], x) * x) - 1.0


def linear_rank_1_zero_residual(x, m):
    """Linear function, rank 1 with zero columns and rows [34], m >= n:
    ``r_i = (i - 1) sum_{j=2}^{n-1} j x_j - 1`` for 1 < i < m, ``r_1 = r_m = -1``."""
    j = _index(x.shape[0], x)
    inner = jnp.sum(jnp.where((j > 1) & (j < x.shape[0]), j * x, 0.0))
    factor = jnp.where(_index(m, x) < m, _index(m, x) - 1.0, 0.0)
    return factor * inner - 1.0


def chebyquad_residual(x, m):
    """Chebyquad [35], m >= n: ``r_i = mean_j T_i(2 x_j - 1) - integral_0^1 T_i(2 s - 1) ds``
    (T_i the Chebyshev polynomial; the integral is 0 for odd i, -1/(i^2 - 1) for even i),
    by the three-term recurrence, which also holds outside [0, 1]."""
    y = 2.0 * x - 1.0
    previous, current = jnp.ones_like(y), y
    rows = []
    for i in range(1, m + 1):
        rows.append(jnp.mean(current) + (1.0 / (i * i - 1.0) if i % 2 == 0 else 0.0))
        previous, current = current, 2.0 * y * current - previous
    return jnp.stack(rows)


def _with_m(residual: Callable, m: int) -> Callable:
    """``residual(x, m)`` as a named ``r(x)`` for one m."""

    def fixed(x):
        return residual(x, m)

    fixed.__name__ = fixed.__qualname__ = f"{residual.__name__}_m{m}"
    fixed.__module__ = __name__
    fixed.__doc__ = f"{residual.__name__} with m = {m}."
    return fixed


# --------------------------------------------------------------------------------------------
# The registry.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class MghProblem:
    """One MGH least-squares problem at fixed sizes. Arrays are read-only float64 numpy.

    Attributes:
        name: registry key, e.g. ``"rosenbrock"``, ``"watson_9"``, ``"chebyquad_8"``.
        number: MGH's problem number (1-35).
        residual: ``residual(x) -> (m,)``, pure ``jax.numpy``, in ``x``'s dtype.
        x0: MGH's standard start, shape (n,).
        num_residuals: m.
        optima: accepted optimal values of ``F = sum(r**2)``, global first (module docstring).
        notes: where the optima come from, where the minimiser lies.
    """

    name: str
    number: int
    residual: Callable
    x0: np.ndarray
    num_residuals: int
    optima: tuple
    notes: str = ""

    def __post_init__(self):
        x0 = np.array(self.x0, dtype=np.float64)
        x0.flags.writeable = False
        object.__setattr__(self, "x0", x0)
        object.__setattr__(self, "optima", tuple(float(f) for f in self.optima))

    @property
    def dim(self) -> int:
        """n, the number of variables."""
        return self.x0.shape[0]

    @property
    def f_star(self) -> float:
        """The global minimum of ``F = sum(r**2)``, as MGH print it."""
        return self.optima[0]

    def __repr__(self) -> str:
        return (f"MghProblem(name={self.name!r}, number={self.number}, n={self.dim}, "
                f"m={self.num_residuals}, optima={self.optima!r})")


_AT_INFINITY = "also reached as parameters run off to infinity (MGH): "

_REGISTERED = [
    MghProblem("rosenbrock", 1, rosenbrock_residual, [-1.2, 1.0], 2, (0.0,)),
    MghProblem("freudenstein_roth", 2, freudenstein_roth_residual, [0.5, -2.0], 2,
               (0.0, 48.9842), notes="0 at (5, 4); local minimum 48.9842 at (11.41, -0.8968) "
                                     "(MGH), where MINPACK's lmder ends from all three starts."),
    MghProblem("powell_badly_scaled", 3, powell_badly_scaled_residual, [0.0, 1.0], 2, (0.0,)),
    MghProblem("brown_badly_scaled", 4, brown_badly_scaled_residual, [1.0, 1.0], 3, (0.0,)),
    MghProblem("beale", 5, beale_residual, [1.0, 1.0], 3, (0.0,)),
    MghProblem("jennrich_sampson", 6, jennrich_sampson_residual, [0.3, 0.4], 10, (124.362,)),
    MghProblem("helical_valley", 7, helical_valley_residual, [-1.0, 0.0, 0.0], 3, (0.0,)),
    MghProblem("bard", 8, bard_residual, [1.0, 1.0, 1.0], 15, (8.21487e-3, 17.4286),
               notes=_AT_INFINITY + "17.4286 at (0.8406, -inf, -inf); MINPACK's lmder ends "
                                    "there from 10 x0 and 100 x0. Not accepted: 17.0549, "
                                    "approached along x2 -> +inf, x3 -> -inf."),
    MghProblem("gaussian", 9, gaussian_residual, [0.4, 1.0, 0.0], 15, (1.12793e-8,)),
    MghProblem("meyer", 10, meyer_residual, [0.02, 4000.0, 250.0], 16, (87.9458,)),
    MghProblem("gulf", 11, gulf_residual, [5.0, 2.5, 0.15], 99, (0.0,),
               notes="0 at (50, 25, 1.5); m = 99 keeps t_i < 1, where |y_i - x2| = 0 at the "
                     "minimiser would make the derivative in x3 undefined."),
    MghProblem("box_3d", 12, box_3d_residual, [0.0, 10.0, 20.0], 10, (0.0,),
               notes="0 at (1, 10, 1), (10, 1, -1) and on the line (a, a, 0). Not accepted: "
                     "0.0755887, approached as x2 -> +inf with x1 = 0.6136, x3 = 1.320, where "
                     "MINPACK's lmder stops from 10 x0 and 100 x0 (MGH list no such value)."),
    MghProblem("powell_singular", 13, powell_singular_residual, [3.0, -1.0, 0.0, 1.0], 4,
               (0.0,), notes="Singular Jacobian at the minimiser 0."),
    MghProblem("wood", 14, wood_residual, [-3.0, -1.0, -3.0, -1.0], 6, (0.0,)),
    MghProblem("kowalik_osborne", 15, kowalik_osborne_residual, [0.25, 0.39, 0.415, 0.39], 11,
               (3.07505e-4, 1.02734e-3, 4.23675e-4),
               notes=_AT_INFINITY + "1.02734e-3 at (+inf, -14.07, -inf, -inf); MINPACK's "
                                    "lmder ends there from 10 x0. Local minimum 4.23675e-4 "
                                    "found here at (0.2254, -0.4148, -0.0245, -0.1780), where "
                                    "the model has a pole between the data points."),
    MghProblem("brown_dennis", 16, brown_dennis_residual, [25.0, 5.0, -5.0, -1.0], 20,
               (85822.2,)),
    MghProblem("osborne_1", 17, osborne_1_residual, [0.5, 1.5, -1.0, 0.01, 0.02], 33,
               (5.46489e-5,)),
    MghProblem("biggs_exp6", 18, biggs_exp6_residual, [1.0, 2.0, 1.0, 1.0, 1.0, 1.0], 13,
               (0.0, 5.65565e-3),
               notes="0 at (1, 10, 1, 5, 4, 3) and other points; local minimum 5.65565e-3 (MGH)."),
    MghProblem("osborne_2", 19, osborne_2_residual,
               [1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5], 65, (4.01377e-2,)),
    MghProblem("watson_6", 20, watson_residual, [0.0] * 6, 31, (2.28767e-3,)),
    MghProblem("watson_9", 20, watson_residual, [0.0] * 9, 31, (1.39976e-6,)),
    MghProblem("watson_12", 20, watson_residual, [0.0] * 12, 31, (4.72238e-10,)),
    MghProblem("extended_rosenbrock_10", 21, rosenbrock_residual, [-1.2, 1.0] * 5, 10, (0.0,)),
    MghProblem("extended_powell_singular_12", 22, powell_singular_residual,
               [3.0, -1.0, 0.0, 1.0] * 3, 12, (0.0,)),
    MghProblem("penalty_1_4", 23, penalty_1_residual, np.arange(1.0, 5.0), 5, (2.24997e-5,)),
    MghProblem("penalty_1_10", 23, penalty_1_residual, np.arange(1.0, 11.0), 11,
               (7.08765e-5,)),
    MghProblem("penalty_2_4", 24, penalty_2_residual, [0.5] * 4, 8, (9.37629e-6,)),
    MghProblem("penalty_2_10", 24, penalty_2_residual, [0.5] * 10, 20, (2.93660e-4,)),
    MghProblem("variably_dimensioned_10", 25, variably_dimensioned_residual,
               1.0 - np.arange(1.0, 11.0) / 10.0, 12, (0.0,)),
    MghProblem("trigonometric_10", 26, trigonometric_residual, [0.1] * 10, 10,
               (0.0, 2.79506e-5, 4.21863e-5, 8.78823e-4),
               notes="Local minima found here (not in MGH): 2.79506e-5, where SciPy's lm ends "
                     "from all three starts; 4.21863e-5 (x6 = 0.258, the others near 0.06), "
                     "where jacopt's lm ends from 10 x0; 8.78823e-4 near x = 12.64 "
                     "(4 pi + 0.07). F is periodic in each x_j with period 2 pi."),
    MghProblem("brown_almost_linear_10", 27, brown_almost_linear_residual, [0.5] * 10, 10,
               (0.0, 1.0), notes="0 at (a, ..., a, a^(1-n)) with n a^n - (n+1) a^(n-1) + 1 = 0; "
                                 "1 at (0, ..., 0, n+1) (MGH)."),
    MghProblem("discrete_boundary_value_10", 28, discrete_boundary_value_residual,
               [t * (t - 1.0) for t in np.arange(1.0, 11.0) / 11.0], 10, (0.0,)),
    MghProblem("discrete_integral_equation_10", 29, discrete_integral_equation_residual,
               [t * (t - 1.0) for t in np.arange(1.0, 11.0) / 11.0], 10, (0.0,)),
    MghProblem("broyden_tridiagonal_10", 30, broyden_tridiagonal_residual, [-1.0] * 10, 10,
               (0.0,)),
    MghProblem("broyden_banded_10", 31, broyden_banded_residual, [-1.0] * 10, 10, (0.0,)),
] + [
    MghProblem(f"linear_full_rank_5_{m}", 32, _with_m(linear_full_rank_residual, m), [1.0] * 5,
               m, (m - 5.0,), notes="F* = m - n at x = -1.")
    for m in (10, 50)
] + [
    MghProblem(f"linear_rank_1_5_{m}", 33, _with_m(linear_rank_1_residual, m), [1.0] * 5, m,
               (m * (m - 1.0) / (2.0 * (2.0 * m + 1.0)),),
               notes="F* = m (m - 1) / (2 (2m + 1)) on the hyperplane sum_j j x_j = 3/(2m + 1).")
    for m in (10, 50)
] + [
    MghProblem(f"linear_rank_1_zero_5_{m}", 34, _with_m(linear_rank_1_zero_residual, m),
               [1.0] * 5, m, ((m * m + 3.0 * m - 6.0) / (2.0 * (2.0 * m - 3.0)),),
               notes="F* = (m^2 + 3m - 6) / (2 (2m - 3)) on a hyperplane.")
    for m in (10, 50)
] + [
    MghProblem("chebyquad_1_8", 35, _with_m(chebyquad_residual, 8), [0.5], 8, (3.55039,),
               notes="MINPACK's size (not in MGH's table): x0 = 1/2 is a stationary point "
                     "(a local maximum); 3.55039 at x = 0.98173 (and 1 - 0.98173), where "
                     "MINPACK's lmder ends from 10 x0 and 100 x0."),
] + [
    MghProblem(f"chebyquad_{n}", 35, _with_m(chebyquad_residual, n),
               np.arange(1.0, n + 1.0) / (n + 1.0), n, (f_star,))
    for n, f_star in ((8, 3.51687e-3), (9, 0.0))
] + [
    MghProblem("chebyquad_10", 35, _with_m(chebyquad_residual, 10),
               np.arange(1.0, 11.0) / 11.0, 10, (6.50395e-3, 9.50063e-3),
               notes="Local minimum 9.50063e-3 found here (not in MGH), where SciPy's trf ends "
                     "from 10 x0 and 100 x0."),
]

PROBLEMS: dict[str, MghProblem] = {p.name: p for p in _REGISTERED}
"""name -> MghProblem, in MGH's order."""


def load(name: str) -> MghProblem:
    """The registered problem ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in PROBLEMS:
        raise ValueError(f"name: unknown MGH problem {name!r}; valid names: "
                         f"{', '.join(PROBLEMS)}")
    return PROBLEMS[name]


def starts(problem: MghProblem) -> list[np.ndarray]:
    """``[x0, 10 x0, 100 x0]`` (:data:`FACTORS`) by MINPACK's ``initpt`` rule: a start that is
    zero in every component becomes ``factor * ones`` for factors other than 1."""
    x0 = problem.x0
    if not np.any(x0):
        return [x0.copy() if f == 1.0 else np.full_like(x0, f) for f in FACTORS]
    return [f * x0 for f in FACTORS]


def solved(problem: MghProblem, f) -> bool:
    """Whether ``F = sum(r**2)`` (not jacopt's ``cost = F/2``) reached an accepted optimum:
    ``F <= f (1 + RTOL) + ATOL`` for the global ``f``, or ``|F - f| <= f RTOL + ATOL`` for a
    local one (so that a value between two optima is not counted). Non-finite F: False."""
    f = float(f)
    if not math.isfinite(f):
        return False
    if f <= problem.optima[0] * (1.0 + RTOL) + ATOL:
        return True
    return any(abs(f - opt) <= opt * RTOL + ATOL for opt in problem.optima[1:])
