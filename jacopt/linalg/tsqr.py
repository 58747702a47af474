"""Tall-skinny QR (TSQR) of residual rows split over devices.

Demmel, Grigori, Hoemmen & Langou (2012), "Communication-optimal parallel and sequential QR and
LU factorizations", SIAM J. Sci. Comput. 34(1): with ``A = [A_1; ...; A_N]`` split by rows,
``A_i = Q_i R_i`` locally, then ``[R_1; ...; R_N] = Q' R`` gives ``A = diag(Q_i) Q' R``: the ``R``
of ``A`` (up to row signs) from ``N`` local QRs and one QR of the stacked ``R_i``, so only the
``N (q x q)`` factors move between devices (one all-gather), never the rows. Applied to the
augmented ``[J | r]`` this gives :func:`jacopt.linalg.triangular_factor`'s ``R`` and ``Q^T r``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from jacopt.linalg.dense import triangular_factor

__all__ = ["tsqr_r", "tsqr_factor"]

try:
    _shard_map = jax.shard_map
except AttributeError:  # pragma: no cover (older JAX)
    from jax.experimental.shard_map import shard_map as _shard_map


def tsqr_r(a, mesh, axis):
    """The stacked local ``R`` factors of ``a`` (``p x q``, rows split over the mesh axis
    ``axis`` of ``mesh``): an ``(N q) x q`` array, the same on every device, whose ``R`` factor
    equals ``a``'s (``S^T S = a^T a``). Rows are padded with zeros (which change no ``R``) to a
    multiple of ``N`` with at least ``q`` rows per device. One local QR per device (LAPACK
    ``geqrf``, O(p q^2 / N)) and one all-gather of ``N q^2`` numbers."""
    size = int(mesh.shape[axis])
    p, q = a.shape
    local = max(-(-p // size), q)
    if local * size != p:
        a = jnp.concatenate([a, jnp.zeros((local * size - p, q), a.dtype)], axis=0)
    spec = PartitionSpec(axis, None)
    a = lax.with_sharding_constraint(a, NamedSharding(mesh, spec))

    def gathered(block):
        return lax.all_gather(jnp.linalg.qr(block, mode="r"), axis, tiled=True)

    return _shard_map(gathered, mesh=mesh, in_specs=spec, out_specs=PartitionSpec(),
                      check_vma=False)(a)


def tsqr_factor(J, r, mesh, axis, fixed=None, fixed_scale=None):
    """:func:`jacopt.linalg.triangular_factor` of ``J`` ``(m, n)`` and ``r`` ``(m,)`` whose
    rows are split over ``axis`` of ``mesh``: ``(R, qtr)`` from the TSQR of ``[J | r]``
    (:func:`tsqr_r`), then one QR of the ``(N (n+1)) x (n+1)`` stack with the ``fixed`` pins
    appended (column operations commute with the orthogonal factor, so pinning the stack pins
    ``J``). Replicated outputs; cost O(m n^2 / N + N n^3)."""
    n = J.shape[1]
    stack = tsqr_r(jnp.concatenate([J, r[:, None]], axis=1), mesh, axis)
    return triangular_factor(stack[:, :n], stack[:, n], fixed, fixed_scale)
