"""Sparse residual families: the 2-D Brusselator steady state and Broyden tridiagonal.

Brusselator: the reaction-diffusion system of Hairer & Wanner, *Solving Ordinary Differential
Equations II* (2nd ed., 1996), Sec. IV.10 ("BRUSS-2D"), without the time-dependent forcing,

    u_t = 1 + u^2 v - 4.4 u + alpha * Lap(u)
    v_t = 3.4 u - u^2 v + alpha * Lap(v),

on the unit square discretised by an N x N periodic grid (spacing 1/N, 5-point Laplacian):
2 N^2 unknowns ``x = concatenate([u.ravel(), v.ravel()])``; the steady-state residual is the
right-hand side. Each residual depends on a 5-point stencil of its own species and on the
other species at the same point: 6 nonzeros per Jacobian row. The start is Hairer & Wanner's
initial condition ``u = 22 y (1 - y)^{3/2}``, ``v = 27 x (1 - x)^{3/2}``.

Broyden tridiagonal: Moré, Garbow & Hillstrom (1981), problem 30, any n, start ``-1``
(the residual is :func:`jacopt.problems.mgh.broyden_tridiagonal_residual`).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jacopt.problems.mgh import broyden_tridiagonal_residual

__all__ = ["brusselator_residual", "brusselator_start", "broyden_tridiagonal_residual",
           "broyden_tridiagonal_start", "ALPHA"]

ALPHA = 0.1  # diffusion coefficient (Hairer & Wanner)


def _laplacian(w, n: int):
    """5-point periodic Laplacian on the unit square, spacing 1/n."""
    return (n * n) * (jnp.roll(w, 1, 0) + jnp.roll(w, -1, 0) + jnp.roll(w, 1, 1)
                      + jnp.roll(w, -1, 1) - 4.0 * w)


def brusselator_residual(x, alpha: float = ALPHA):
    """Steady-state residual of the 2-D Brusselator, ``x`` of length ``2 N^2``."""
    n = int(round((x.shape[0] // 2) ** 0.5))
    if 2 * n * n != x.shape[0]:
        raise ValueError(f"x must have length 2 N^2 for a grid size N; got {x.shape[0]}")
    u = x[: n * n].reshape(n, n)
    v = x[n * n:].reshape(n, n)
    uuv = u * u * v
    ru = 1.0 + uuv - 4.4 * u + alpha * _laplacian(u, n)
    rv = 3.4 * u - uuv + alpha * _laplacian(v, n)
    return jnp.concatenate([ru.ravel(), rv.ravel()])


def brusselator_start(n: int, dtype=None):
    """Hairer & Wanner's initial state on the ``n x n`` grid, as a flat ``(2 n^2,)`` array."""
    grid = np.arange(n) / n
    X, Y = np.meshgrid(grid, grid, indexing="ij")
    u = 22.0 * Y * (1.0 - Y) ** 1.5
    v = 27.0 * X * (1.0 - X) ** 1.5
    return jnp.asarray(np.concatenate([u.ravel(), v.ravel()]), dtype=dtype)


def broyden_tridiagonal_start(n: int, dtype=None):
    """MGH's start for Broyden tridiagonal: ``-1`` in every component."""
    return -jnp.ones(n, dtype=dtype)
