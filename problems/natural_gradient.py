"""The Fisher matrix and the natural policy gradient of the linear softmax policies of
:mod:`jacopt.problems.softmax_policy`, exact (no sampling).

The Fisher matrix. ``F = sum_s d(s) sum_a pi(a|s) g_sa g_sa^T`` with ``g_sa = vec(d log pi(a|s)
/ dX)``, an (A*F, A*F) matrix in ``X.ravel()`` order, built from the (S*A, A*F) Jacobian of all
log-probabilities (one :func:`jacopt.jacobian` call) as ``J^T diag(w) J``, ``w[s,a] = d(s)
pi(a|s)`` (:func:`fisher_matrix`), or applied matrix-free as ``v -> J^T (w * (J v))``
(:func:`fisher_operator`, one linearisation reused for every product). ``F`` is always singular:
adding a constant to every logit of a state changes no probability, so ``F (1 c^T) = 0`` along
those directions; the natural gradient therefore uses a pseudo-inverse or damping.

The natural policy gradient (Kakade 2001) is ``w = (F + damping I)^+ grad J``
(:func:`natural_gradient`). With ``F`` and ``grad J`` weighted by the same ``d``, the update
``X + eta w`` changes the logits of each state by ``eta (Q(s,.) - tau log pi(.|s))`` plus a
constant (when ``phi`` spans the states), so ``eta = 1 / tau`` is soft policy iteration: exact in
one step on an entropy-regularised bandit, linear at rate ``discount`` on an MDP (Cen, Cheng,
Chen, Wei and Chi 2021, "Fast global convergence of natural policy gradient methods with entropy
regularization", Oper. Res. 70(4), with their normalisation of ``d``).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

import jacopt
from jacopt.problems.softmax_policy import (
    log_prob_jacobian_matrix,
    log_probs,
    policy_gradient,
    probs,
    state_weights,
)

__all__ = ["fisher_matrix", "fisher_operator", "fisher_solve", "natural_gradient", "npg_step"]


def _fisher_weights(X, task, weights):
    """``w[s, a] = d(s) pi(a|s)`` (S, A); ``weights`` overrides ``d``."""
    d = state_weights(X, task) if weights is None else weights
    return d[:, None] * probs(X, task.features)


def fisher_matrix(X, task, weights=None):
    """The Fisher information ``sum_s d(s) sum_a pi(a|s) g_sa g_sa^T``, (A*F, A*F) in
    ``X.ravel()`` order. ``d`` is :func:`state_weights` unless ``weights`` (S,) is given.

    Built from the (S*A, A*F) log-probability Jacobian (:func:`log_prob_jacobian_matrix`) as
    ``J^T diag(w) J``: cost one Jacobian plus O(S A (A F)^2)."""
    jac = log_prob_jacobian_matrix(X, task.features)
    w = _fisher_weights(X, task, weights).reshape(-1)
    return jac.T @ (w[:, None] * jac)


def fisher_operator(X, task, weights=None):
    """The Fisher matrix as a function ``v (A, F) -> F v (A, F)``, never formed.

    ``F v = J^T (w * (J v))`` with ``J`` from :func:`jacopt.jacobian_operator`: the
    log-probabilities are linearised once here (one forward pass), then each product costs one
    JVP and one transposed JVP, O(S A F) work."""
    w = _fisher_weights(X, task, weights).reshape(-1)
    jac = jacopt.jacobian_operator(log_probs, X, task.features)

    def apply(v):
        return jac.rmv(w * jac.mv(v.reshape(-1))).reshape(v.shape)

    return apply


def fisher_solve(X, task, v, *, damping=0.0, matrix_free=False, rcond=None, maxiter=None,
                 tol=None):
    """``(F + damping I)^+ v`` for ``v`` (A, F) and the Fisher matrix ``F`` at ``X``.

    - ``matrix_free=False``: ``F`` from :func:`fisher_matrix`; with ``damping > 0`` a Cholesky
      solve, with ``damping == 0`` the pseudo-inverse from an eigendecomposition, eigenvalues
      below ``rcond * max eigenvalue`` (default ``A*F`` machine epsilons) dropped. ``F`` is
      singular (module docstring) but a policy gradient lies in its range, so the
      pseudo-inverse gives the exact minimum-norm natural gradient. Cost O((A F)^3).
    - ``matrix_free=True``: conjugate gradients on :func:`fisher_operator` (``damping > 0``
      recommended), to a relative residual ``tol`` (default ``sqrt(eps)``), at most ``maxiter``
      (default ``2*A*F``) products.
    ``damping`` and ``rcond`` are absolute and relative, Python floats (static under jit).
    """
    n = v.size
    if matrix_free:
        op = fisher_operator(X, task)
        w, _ = jax.scipy.sparse.linalg.cg(
            lambda u: op(u) + damping * u, v,
            tol=math.sqrt(jnp.finfo(v.dtype).eps) if tol is None else tol,
            maxiter=2 * n if maxiter is None else maxiter)
        return w
    fisher = fisher_matrix(X, task)
    g = v.reshape(-1)
    if damping > 0:
        factor = jax.scipy.linalg.cho_factor(fisher + damping * jnp.eye(n, dtype=fisher.dtype))
        return jax.scipy.linalg.cho_solve(factor, g).reshape(v.shape)
    evals, evecs = jnp.linalg.eigh(fisher)
    cutoff = (n * jnp.finfo(fisher.dtype).eps if rcond is None else rcond) * evals[-1]
    inv = jnp.where(evals > cutoff, 1.0 / jnp.where(evals > cutoff, evals, 1.0), 0.0)
    return (evecs @ (inv * (evecs.T @ g))).reshape(v.shape)


def natural_gradient(X, task, **solve_options):
    """The natural policy gradient ``(F + damping I)^+ grad J`` (A, F) (Kakade 2001);
    ``solve_options`` as in :func:`fisher_solve`."""
    return fisher_solve(X, task, policy_gradient(X, task), **solve_options)


def npg_step(X, task, step_size, damping=0.0):
    """One natural-policy-gradient ascent step ``X + step_size * natural_gradient(X)``.
    ``step_size = 1 / tau`` is soft policy iteration (module docstring)."""
    return X + step_size * natural_gradient(X, task, damping=damping)
