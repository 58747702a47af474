"""Small multilayer perceptrons as least-squares and minimisation problems.

The network. ``params`` is a list of ``(W, b)`` pairs, ``W`` of shape (n_out, n_in) and ``b`` of
shape (n_out,) (PyTorch's ``nn.Linear`` layout), for layer sizes ``[n_0, n_1, ..., n_L]``;
:func:`mlp` maps inputs (N, n_0) to outputs (N, n_L) with the activation (``tanh`` by default)
after every layer but the last. Parameters count ``sum_l n_l (n_{l-1} + 1)``: 47 for
``[6, 4, 3, 1]``. Flat order (Jacobian columns) is ``ravel_pytree``'s: ``W0, b0, W1, b1, ...``,
each row-major; :class:`jacopt.TreeIndex` names every column.

Losses, each a module-level function of ``(params, *args)`` built once per activation name (so
``jit`` caches across calls; ``residual_fn("tanh") is residual_fn("tanh")``):

- :func:`residual_fn` -> ``r(params, x, y) = (mlp(params, x) - y).ravel()`` (N*n_L,), for
  :func:`jacopt.least_squares`; its cost ``0.5 sum r^2`` is ``N n_L / 2`` times the MSE.
- :func:`mse_fn` -> the mean squared error (scalar), for :func:`jacopt.minimize` and optax.
- :func:`cross_entropy_fn` -> the mean softmax cross-entropy against one-hot labels (N, C).

Cross-entropy is not a sum of squares, so it is trained by generalised Gauss-Newton
(:func:`ggn_factor`, :func:`ggn_matrix`, :func:`train_ggn`; Schraudolph 2002, Martens 2010):
the curvature ``G = (1/N) sum_i J_i^T H_i J_i`` with ``J_i`` the (C, P) Jacobian of sample i's
logits and ``H_i = diag(p_i) - p_i p_i^T`` the Hessian of the cross-entropy in the logits
(positive semi-definite, so ``G`` is, unlike the Hessian). We solve with ``G`` directly rather
than through ``least_squares`` on a residual form: the natural residual ``r_i = sqrt(2 CE_i)``
has the Gauss-Newton matrix ``sum_i g_i g_i^T / (2 CE_i)``, rank one per sample and not ``G``;
residuals ``M_i^T (z_i - z_i^k)`` built from a factor ``H_i = M_i M_i^T`` reproduce ``G`` only
for the quadratic model at the current point ``k``, re-linearised every step, which is what
:func:`train_ggn` does without the detour.

Problems (:data:`PROBLEMS`, :func:`get`, :func:`names`):

- ``seed-mlp``: [6, 4, 3, 1] tanh on 20 x 6 inputs, fitting a teacher network of the same shape
  (realisable: minimum MSE 0); the weight Jacobian is (20, 47), one :func:`jacopt.jacobian`
  call (:func:`weight_jacobian`). Target MSE 1e-10.
- ``sin-regression``: noisy ``sin`` (1,000 points, noise sd 0.1), [1, 32, 32, 1] tanh. Target:
  the noise floor ``mean((y - sin x)^2)`` (the training MSE of the true function). Default
  solver: the matrix-free Levenberg-Marquardt (``solver="lm-matrix-free"``), since the dense
  one factorises a (1000 + 1153) x 1153 system per step.
- ``two-spirals``: two interleaved spirals of 2.5 turns (2 x 100 points), [2, 16, 16, 2] tanh,
  softmax cross-entropy. Target mean cross-entropy 0.01 (all points classified with margin).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jacopt
from jacopt._loop import run
from jacopt.results import MinimizeResult
from jacopt.solvers import MatrixFreeLevenbergMarquardt
from jacopt.solvers.generalised_gauss_newton import GeneralisedGaussNewton, GGNProblem
from jacopt.status import minimize_success

__all__ = [
    "ACTIVATIONS",
    "num_params",
    "init_mlp",
    "mlp",
    "residual_fn",
    "mse_fn",
    "cross_entropy_fn",
    "weight_jacobian",
    "ggn_factor",
    "ggn_matrix",
    "train_ggn",
    "MLPProblem",
    "PROBLEMS",
    "get",
    "names",
]

ACTIVATIONS: dict[str, Callable] = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
}


def _activation(name: str) -> Callable:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}.")
    return ACTIVATIONS[name]


def _check_sizes(sizes) -> tuple[int, ...]:
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least two positive layer widths; got {sizes}.")
    return sizes


def num_params(sizes) -> int:
    """``sum_l n_l (n_{l-1} + 1)``, e.g. 47 for [6, 4, 3, 1]."""
    sizes = _check_sizes(sizes)
    return sum(n_out * (n_in + 1) for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def init_mlp(seed, sizes, dtype=None) -> list:
    """Parameters ``[(W, b), ...]`` with every entry U(-1/sqrt(n_in), 1/sqrt(n_in)) (PyTorch's
    ``nn.Linear`` default), from ``seed`` (an int or a sequence of ints for NumPy's
    ``default_rng``), in ``dtype`` (default: JAX's default float)."""
    sizes = _check_sizes(sizes)
    rng = np.random.default_rng(seed)
    dtype = _dtype(dtype)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        params.append((jnp.asarray(rng.uniform(-bound, bound, (n_out, n_in)), dtype),
                       jnp.asarray(rng.uniform(-bound, bound, (n_out,)), dtype)))
    return params


def mlp(params, x, activation: str = "tanh"):
    """Outputs (N, n_L) for inputs ``x`` (N, n_0): ``h <- act(h @ W.T + b)`` for every layer,
    no activation after the last. Cost O(N P) for P parameters."""
    act = _activation(activation)
    if x.ndim != 2 or x.shape[1] != params[0][0].shape[1]:
        raise ValueError(f"x must have shape (N, {params[0][0].shape[1]}) for these params; "
                         f"got {x.shape}.")
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w.T + b
        if i < len(params) - 1:
            h = act(h)
    return h


@functools.lru_cache(maxsize=None)
def residual_fn(activation: str = "tanh") -> Callable:
    """``r(params, x, y) = (mlp(params, x) - y).ravel()``, shape (N * n_L,), for
    :func:`jacopt.least_squares` (``args=(x, y)``). One function object per activation."""
    _activation(activation)

    def residual(params, x, y):
        return (mlp(params, x, activation) - y).reshape(-1)

    residual.__name__ = residual.__qualname__ = f"mlp_residual_{activation}"
    return residual


@functools.lru_cache(maxsize=None)
def mse_fn(activation: str = "tanh") -> Callable:
    """``mse(params, x, y) = mean((mlp(params, x) - y)^2)`` (scalar), for :func:`jacopt.minimize`
    and optax. One function object per activation."""
    residual = residual_fn(activation)

    def mse(params, x, y):
        r = residual(params, x, y)
        return jnp.mean(r * r)

    mse.__name__ = mse.__qualname__ = f"mlp_mse_{activation}"
    return mse


@functools.lru_cache(maxsize=None)
def cross_entropy_fn(activation: str = "tanh") -> Callable:
    """``ce(params, x, labels) = -mean_i sum_c labels[i, c] log softmax(mlp(params, x))[i, c]``
    (scalar) for one-hot ``labels`` (N, C). One function object per activation."""
    _activation(activation)

    def cross_entropy(params, x, labels):
        logits = mlp(params, x, activation)
        return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits, axis=-1), axis=-1))

    cross_entropy.__name__ = cross_entropy.__qualname__ = f"mlp_cross_entropy_{activation}"
    return cross_entropy


def weight_jacobian(params, x, activation: str = "tanh", *, mode: str = "auto"):
    """The Jacobian of the flattened outputs ``mlp(params, x).ravel()`` with respect to every
    weight and bias: (N * n_L, P), columns in ``ravel_pytree(params)`` order. One
    ``jacopt.jacobian(..., as_matrix=True)`` call: min(N n_L, P) JVPs or VJPs (``mode="auto"``
    picks; seed-mlp's (20, 47) takes 20 VJPs)."""
    return jacopt.jacobian(functools.partial(mlp, activation=activation), mode=mode,
                           as_matrix=True)(params, x)


# --------------------------------------------------------------------------------------------
# Generalised Gauss-Newton for cross-entropy
# --------------------------------------------------------------------------------------------


def ggn_factor(params, x, labels, activation: str = "tanh"):
    """A factor ``B`` of the generalised Gauss-Newton matrix, ``G = B^T B``: (N*(C-1), P).

    The cross-entropy depends on the logits only through ``z'_c = z_c - z_C`` (c < C), whose
    Hessian ``H'_i = diag(p'_i) - p'_i p'_i^T`` (``p'`` = the first C-1 probabilities) is
    positive definite; ``H' = M M^T`` with ``M = diag(sqrt p') - p' sqrt(p')^T / (1 + sqrt
    p_C)`` (no factorisation, real for every p). With ``J'_i`` the (C-1, P) Jacobian of the
    ``z'`` of sample i, ``B_i = M_i^T J'_i / sqrt(N)``, so ``G = (1/N) sum_i J_i^T (diag(p_i) -
    p_i p_i^T) J_i``. Cost: one (N*C, P) :func:`weight_jacobian` call plus O(N C^2 P).
    ``labels`` (N, C) only fixes N and C (the GGN of cross-entropy does not depend on them)."""
    num, classes = labels.shape
    jac = weight_jacobian(params, x, activation).reshape(num, classes, -1)
    p = jax.nn.softmax(mlp(params, x, activation), axis=-1)
    reduced_jac = jac[:, :-1, :] - jac[:, -1:, :]
    p_head, sqrt_last = p[:, :-1], jnp.sqrt(p[:, -1])
    sqrt_head = jnp.sqrt(p_head)
    # M[n] = diag(sqrt p') - p' sqrt(p')^T / (1 + sqrt p_C); B[n] = M[n]^T J'[n]
    m = (jax.vmap(jnp.diag)(sqrt_head)
         - p_head[:, :, None] * sqrt_head[:, None, :] / (1 + sqrt_last)[:, None, None])
    factor = jnp.einsum("nij,nip->njp", m, reduced_jac)
    return factor.reshape(num * (classes - 1), -1) / jnp.sqrt(jnp.asarray(num, factor.dtype))


def ggn_matrix(params, x, labels, activation: str = "tanh"):
    """The generalised Gauss-Newton matrix of the mean cross-entropy, (P, P):
    ``(1/N) sum_i J_i^T (diag(p_i) - p_i p_i^T) J_i`` with ``J_i`` (C, P) the Jacobian of sample
    i's logits and ``p_i`` its softmax; ``B^T B`` from :func:`ggn_factor`. Positive
    semi-definite. Cost: the Jacobian plus O(N (C-1) P^2)."""
    factor = ggn_factor(params, x, labels, activation)
    return factor.T @ factor


def train_ggn(params0, x, labels, *, max_steps: int, activation: str = "tanh",
              history: bool = False, **options) -> MinimizeResult:
    """Minimise the mean cross-entropy of :func:`mlp`'s logits by damped generalised
    Gauss-Newton (:class:`~jacopt.solvers.generalised_gauss_newton.GeneralisedGaussNewton`
    with the factor :func:`ggn_factor`; Schraudolph 2002, Nielsen 1999), at most ``max_steps``
    iterations, in the one loop every jacopt solver runs in.

    ``labels``: one-hot (N, C) for the N rows of ``x``; ``options``: the solver's (``gtol``,
    default 1e-10, and ``initial_damping``, default 1), checked before any work. A rejected
    trial is an iteration. Returns a :class:`jacopt.MinimizeResult`: ``params``, ``value`` (the
    mean cross-entropy), ``grad``, ``status`` (``GTOL`` is the success; ``MAX_STEPS``,
    ``NONFINITE``, ``PRECISION_LIMIT`` say why it stopped short, with the best point found),
    ``num_steps``, ``nfev`` (losses), ``njev`` (gradients, each with one (N*C, P) weight Jacobian
    for the factor: ``nhev``) and, with ``history=True``, the loss after every iteration in
    ``history.value`` (row 0 at ``params0``; NaN after ``num_steps``). Works under ``jit`` and
    ``vmap`` (one status per member).
    """
    solver = GeneralisedGaussNewton(**options)
    _activation(activation)
    classes = params0[-1][0].shape[0]
    if labels.ndim != 2 or labels.shape[0] != x.shape[0] or labels.shape[1] != classes:
        raise ValueError(f"labels must be one-hot of shape (N, C) = ({x.shape[0]}, {classes}) "
                         f"for x with {x.shape[0]} rows and a network with {classes} outputs; "
                         f"got {labels.shape}.")
    if classes < 2:
        raise ValueError(f"train_ggn needs at least two classes (the network has {classes} "
                         f"output); for regression use jacopt.least_squares on residual_fn.")
    return _train_ggn(params0, x, labels, solver=solver, max_steps=max_steps,
                      activation=activation, history=bool(history))


@functools.partial(jax.jit, static_argnames=("solver", "max_steps", "activation", "history"))
def _train_ggn(params0, x, labels, *, solver, max_steps, activation, history):
    flat0, unravel = ravel_pytree(params0)
    loss_fn = cross_entropy_fn(activation)

    def loss(v, data):
        return loss_fn(unravel(v), *data)

    def factor(v, data):
        return ggn_factor(unravel(v), *data, activation)

    out = run(solver, GGNProblem(loss, factor, (x, labels)), flat0, max_steps=max_steps,
              history=history)
    state = out.state
    return MinimizeResult(
        params=unravel(state.x), value=state.value, grad=unravel(state.grad),
        success=minimize_success(out.status), status=out.status, num_steps=out.num_steps,
        nfev=state.nfev, ngev=state.ngev, nhev=state.nhev, history=out.history)


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


def _dtype(dtype):
    return jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)


@dataclasses.dataclass(frozen=True, eq=False)
class MLPProblem:
    """One MLP training problem, ready for a solver.

    - ``sizes``, ``activation``; ``params0`` the start (from the seed); ``args = (x, y)`` the
      data (``y`` one-hot labels (N, C) for classification).
    - ``kind``: ``"regression"`` (loss = MSE; ``residual`` for least squares, ``objective`` the
      MSE) or ``"classification"`` (loss = mean cross-entropy = ``objective``; ``residual`` is
      ``None``: see the module docstring).
    - ``optimal_value``: the minimum loss when known (0 for the realisable ``seed-mlp``).
    - ``target_loss``: the "time to target" threshold on :meth:`loss`.
    - ``solver``: the default configuration, ``{"entry": "least_squares" | "minimize" | "ggn",
      "solver": name, **options}``; :meth:`solve` runs it.
    - ``teacher``: the teacher's parameters (``seed-mlp``), else ``None``.
    """

    name: str
    description: str
    sizes: tuple
    activation: str
    kind: str
    params0: Any
    args: tuple
    objective: Callable
    target_loss: float
    solver: dict
    residual: Optional[Callable] = None
    optimal_value: Optional[float] = None
    teacher: Any = None

    @property
    def num_residuals(self) -> int:
        """N * n_L, the length of ``residual``'s output."""
        return int(self.args[1].size)

    def loss(self, params):
        """MSE (regression) or mean cross-entropy (classification) at ``params``."""
        return self.objective(params, *self.args)

    def loss_from_cost(self, cost):
        """The MSE from a least-squares ``cost = 0.5 sum r^2``: ``2 cost / (N n_L)``."""
        return 2.0 * cost / self.num_residuals

    def solve(self, **overrides):
        """Run the default solver configuration (``overrides`` replace its options): a
        :class:`jacopt.LeastSquaresResult` or, for ``entry`` ``"minimize"`` and ``"ggn"``
        (:func:`train_ggn`), a :class:`jacopt.MinimizeResult`."""
        config = {**self.solver, **overrides}
        entry, solver = config.pop("entry"), config.pop("solver")
        if entry == "least_squares":
            return jacopt.least_squares(self.residual, self.params0, args=self.args,
                                        solver=solver, **config)
        if entry == "minimize":
            return jacopt.minimize(self.objective, self.params0, args=self.args, solver=solver,
                                   **config)
        return train_ggn(self.params0, *self.args, activation=self.activation, **config)


def _seed_mlp(seed=0, dtype=None):
    dtype = _dtype(dtype)
    sizes = (6, 4, 3, 1)
    rng = np.random.default_rng([seed, 0])
    x = jnp.asarray(rng.normal(size=(20, sizes[0])), dtype)
    teacher = init_mlp([seed, 1], sizes, dtype)
    y = mlp(teacher, x)
    return MLPProblem(
        name="seed-mlp",
        description="[6, 4, 3, 1] tanh, 20 inputs, fit a teacher network (47 params, "
                    "20 residuals; optimum MSE 0)",
        sizes=sizes, activation="tanh", kind="regression",
        params0=init_mlp([seed, 2], sizes, dtype), args=(x, y),
        residual=residual_fn("tanh"), objective=mse_fn("tanh"), optimal_value=0.0,
        target_loss=1e-10 if dtype == jnp.float64 else 1e-6,
        # x_scale=1: with 20 residuals and 47 parameters, MINPACK's column scaling ("jac")
        # makes Levenberg-Marquardt crawl (MINPACK itself refuses m < n).
        solver={"entry": "least_squares", "solver": "lm", "x_scale": 1.0, "max_steps": 200},
        teacher=teacher,
    )


def _sin_regression(seed=0, dtype=None, num_points=1000, noise=0.1):
    dtype = _dtype(dtype)
    sizes = (1, 32, 32, 1)
    rng = np.random.default_rng([seed, 0])
    x = np.sort(rng.uniform(-math.pi, math.pi, size=(num_points, 1)), axis=0)
    y = np.sin(x) + noise * rng.normal(size=x.shape)
    noise_floor = float(np.mean((y - np.sin(x)) ** 2))
    return MLPProblem(
        name="sin-regression",
        description=f"noisy sin, {num_points} points, noise sd {noise}, [1, 32, 32, 1] tanh "
                    f"(1153 params); target MSE = noise floor {noise_floor:.4g}",
        sizes=sizes, activation="tanh", kind="regression",
        params0=init_mlp([seed, 2], sizes, dtype),
        args=(jnp.asarray(x, dtype), jnp.asarray(y, dtype)),
        residual=residual_fn("tanh"), objective=mse_fn("tanh"),
        target_loss=noise_floor,
        # J is 1000 x 1153: the matrix-free LM (at most 50 LSQR iterations per step) never
        # forms it; a dense LM step factorises a (1000 + 1153) x 1153 system (~2 s here)
        solver={"entry": "least_squares",
                "solver": MatrixFreeLevenbergMarquardt(max_inner_steps=50),
                "x_scale": 1.0, "max_steps": 300},
    )


def two_spirals(num_per_class=100, turns=2.5, noise=0.0, seed=0):
    """Two interleaved spirals in the plane: points (2n, 2) and one-hot labels (2n, 2) (NumPy
    float64). Spiral k is ``r (cos t, sin t)`` rotated by ``k pi``, ``r = t / (2 pi turns)``,
    ``t`` evenly spaced over ``turns`` turns (starting a quarter turn in)."""
    rng = np.random.default_rng([seed, 0])
    t = np.linspace(0.5 * math.pi, 2 * math.pi * turns, num_per_class)
    r = t / (2 * math.pi * turns)
    arm = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    points = np.concatenate([arm, -arm]) + noise * rng.normal(size=(2 * num_per_class, 2))
    labels = np.repeat(np.eye(2), num_per_class, axis=0)
    return points, labels


def _two_spirals(seed=0, dtype=None):
    dtype = _dtype(dtype)
    sizes = (2, 16, 16, 2)
    x, labels = two_spirals(seed=seed)
    return MLPProblem(
        name="two-spirals",
        description="two spirals (2.5 turns, radius 3, 2 x 100 points), [2, 16, 16, 2] tanh "
                    "(354 params), softmax cross-entropy; target mean CE 0.01",
        sizes=sizes, activation="tanh", kind="classification",
        params0=init_mlp([seed, 2], sizes, dtype),
        args=(jnp.asarray(3.0 * x, dtype), jnp.asarray(labels, dtype)),
        objective=cross_entropy_fn("tanh"),
        target_loss=1e-2,
        solver={"entry": "ggn", "solver": "ggn", "max_steps": 200},
    )


PROBLEMS: dict[str, Callable[..., MLPProblem]] = {
    "seed-mlp": _seed_mlp,
    "sin-regression": _sin_regression,
    "two-spirals": _two_spirals,
}


def names() -> tuple[str, ...]:
    """The problem names, in registry order."""
    return tuple(PROBLEMS)


def get(name: str, seed: int = 0, dtype=None) -> MLPProblem:
    """Build problem ``name`` from ``seed`` in ``dtype`` (default: JAX's default float)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown MLP problem {name!r}; valid names: {', '.join(PROBLEMS)}.")
    return PROBLEMS[name](seed=seed, dtype=dtype)
