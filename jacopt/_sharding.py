"""Residual rows sharded over devices: finding the sharding in the user's data, and padding data
so that it divides evenly.

JAX's convention: the user places the data (``jax.device_put(y, NamedSharding(mesh,
P("data")))``) and the computation follows it. :func:`row_sharding` reads that placement on the
host before tracing: a committed ``jax.Array`` among the data whose ``NamedSharding`` splits
axis 0 over a mesh axis makes the fit's residual rows sharded over that axis
(:class:`RowSharding`, a static field of
:class:`jacopt.solvers.least_squares_problem.LeastSquaresProblem`). The solvers then keep the
residuals and Jacobian rows on their devices and factorise with a TSQR
(:func:`jacopt.linalg.tsqr_factor`), so only ``(n + 1) x (n + 1)`` blocks and reductions move
between devices.

JAX refuses to place an array whose sharded axis does not divide evenly;
:func:`shard_rows` pads the data to a multiple of the device count and returns a 0/1 mask of
the real rows, which the residual function multiplies in (padded rows then contribute zero
residual and zero Jacobian rows, and the fit's answer does not change), or which
:func:`jacopt.curve_fit` takes as ``mask=`` (and then leaves out of its degrees of freedom).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jacopt._validate import is_traced

__all__ = ["RowSharding", "row_sharding", "rows_of", "shard_rows", "constrain_rows",
           "placed_like"]


class RowSharding(NamedTuple):
    """Residual rows split over ``mesh.shape[axis]`` devices (hashable: a static argument)."""

    mesh: Mesh
    axis: str

    @property
    def size(self) -> int:
        return int(self.mesh.shape[self.axis])


def _first_axis(spec) -> Optional[str]:
    """The one mesh axis that ``spec`` shards array axis 0 over, else ``None``."""
    if len(spec) == 0 or spec[0] is None:
        return None
    entry = spec[0]
    if isinstance(entry, (tuple, list)):
        return entry[0] if len(entry) == 1 else None
    return entry


def row_sharding(args):
    """``(rows, args)``: the row sharding of the fit's data ``args`` and the data to solve with.
    The first committed ``jax.Array`` leaf (not a tracer) with a ``NamedSharding`` that shards
    axis 0 over a single mesh axis of more than one device gives ``rows = (mesh, axis)``;
    ``None`` when there is none (one device, replicated or host data, or traced under the
    user's own ``jit``/``vmap``, where XLA's partitioner still runs the solve). Leaves placed
    on a mesh with Explicit axes (``jax.make_mesh``'s default) are re-placed, with the same
    devices and specs, on that mesh with Auto axes: the solve's reductions over rows
    (``J^T r``) are then left to the partitioner instead of needing an output sharding."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    rows = None
    out = []
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if (is_traced(leaf) or not isinstance(leaf, jax.Array)
                or not getattr(leaf, "committed", False)
                or not isinstance(sharding, NamedSharding)):
            out.append(leaf)
            continue
        mesh = _auto(sharding.mesh)
        if mesh is not sharding.mesh:
            leaf = jax.device_put(leaf, NamedSharding(mesh, sharding.spec))
        rows = rows or rows_of(leaf)
        out.append(leaf)
    return rows, jax.tree_util.tree_unflatten(treedef, out)


def rows_of(a) -> Optional[RowSharding]:
    """The row sharding of one concrete array (e.g. a fit's Jacobian ``result.jac``): axis 0
    split over a single mesh axis of more than one device; ``None`` for a tracer, an array on
    one device, or one not split by rows."""
    sharding = getattr(a, "sharding", None)
    if (is_traced(a) or not isinstance(a, jax.Array) or a.ndim < 1
            or not isinstance(sharding, NamedSharding)):
        return None
    axis = _first_axis(sharding.spec)
    if axis is None or sharding.mesh.shape[axis] <= 1:
        return None
    return RowSharding(_auto(sharding.mesh), axis)


def _auto(mesh):
    """``mesh`` with every axis Auto (``mesh`` itself when it has no Explicit axis)."""
    types = getattr(mesh, "axis_types", None)
    if not types or all("Explicit" not in str(t) for t in types):
        return mesh
    from jax.sharding import AxisType

    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(types))


def placed_like(value, reference):
    """``value`` (host data of ``reference``'s shape, e.g. curve_fit's unit weights) placed
    as ``reference`` is when that is a committed array split over devices; else unchanged."""
    sharding = getattr(reference, "sharding", None)
    if (isinstance(value, np.ndarray) and isinstance(reference, jax.Array)
            and not is_traced(reference)
            and getattr(reference, "committed", False) and isinstance(sharding, NamedSharding)
            and value.shape == reference.shape and len(sharding.device_set) > 1):
        return jax.device_put(value, sharding)
    return value


def constrain_rows(rows: Optional[RowSharding], a):
    """``a`` (rows first) constrained to be split by rows over ``rows`` so that XLA's
    partitioner keeps row-wise work on the devices that hold the rows; unchanged without a row
    sharding or when the rows do not divide evenly."""
    if rows is None or a.shape[0] % rows.size:
        return a
    spec = PartitionSpec(rows.axis, *([None] * (a.ndim - 1)))
    return jax.lax.with_sharding_constraint(a, NamedSharding(rows.mesh, spec))


def shard_rows(mesh: Mesh, axis: str, *arrays, fill=0.0):
    """Pad ``arrays`` (each with the same first-axis length ``m``) along axis 0 to the next
    multiple of ``mesh.shape[axis]`` and place them split by rows over ``axis``. Returns
    ``(*padded, mask)``: ``mask`` (``(m_padded,)``, the first array's dtype, sharded alike) is 1
    on the ``m`` real rows and 0 on the padding. Padded rows hold ``fill`` (a number, or one per
    array): pick values at which the model is finite, then multiply the residuals by ``mask``
    (``mask * (y - model(b, x))``), so padded rows contribute nothing to the cost, gradient or
    Jacobian and the fit's parameters are those of the unpadded data. With
    :func:`jacopt.curve_fit`, pass ``mask=mask`` instead: it also keeps the padded rows out of
    the number of data ``m``, so the degrees of freedom ``m - n`` and the covariance are the
    unpadded fit's."""
    if not arrays:
        raise ValueError("shard_rows needs at least one array to shard.")
    if axis not in mesh.shape:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh (axes {tuple(mesh.shape)}).")
    arrays = [np.asarray(a) if not isinstance(a, jax.Array) else a for a in arrays]
    lengths = {int(np.shape(a)[0]) if np.ndim(a) else None for a in arrays}
    if None in lengths or len(lengths) != 1:
        raise ValueError(f"shard_rows: every array needs the same first-axis length, got "
                         f"shapes {[tuple(np.shape(a)) for a in arrays]}.")
    m = lengths.pop()
    size = int(mesh.shape[axis])
    padded_m = -(-m // size) * size
    fills = fill if isinstance(fill, (tuple, list)) else [fill] * len(arrays)
    if len(fills) != len(arrays):
        raise ValueError(f"fill: one value per array ({len(arrays)}), got {len(fills)}.")
    out = []
    for a, value in zip(arrays, fills):
        xp = jnp if isinstance(a, jax.Array) else np
        pad = [(0, padded_m - m)] + [(0, 0)] * (np.ndim(a) - 1)
        a = xp.pad(a, pad, constant_values=value)
        spec = PartitionSpec(axis, *([None] * (np.ndim(a) - 1)))
        out.append(jax.device_put(a, NamedSharding(mesh, spec)))
    dtype = out[0].dtype if jnp.issubdtype(out[0].dtype, jnp.floating) else jnp.float32
    mask = np.zeros(padded_m, dtype)
    mask[:m] = 1
    out.append(jax.device_put(mask, NamedSharding(mesh, PartitionSpec(axis))))
    return tuple(out)
