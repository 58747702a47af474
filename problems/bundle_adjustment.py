"""Synthetic bundle-adjustment scenes at the sizes of the public BAL problems.

A scene is made from a seed (NumPy only): ``num_cameras`` cameras on a ring around the origin
looking at it, ``num_points`` points in the unit ball, each seen by ``track_length`` random
cameras (every point projects inside every 1024 x 768 image), observations with Gaussian
pixel noise, and a start perturbed from the truth. :func:`bal_scene` has the size of the BAL
problem ``49-7776`` (Agarwal, Snavely, Seitz & Szeliski 2010, "Bundle adjustment in the
large", ECCV: 49 cameras, 7,776 points; here 31,104 observations at track length 4, the
scene pycolmap's ``synthesize_dataset`` makes at those sizes); :func:`small_scene` one for tests.

Camera model: COLMAP's ``SIMPLE_RADIAL``. A camera is 8 numbers ``[w (3), t (3), f, k]``:
``X_cam = R(w) X + t`` with ``R(w)`` the rotation of the angle-axis vector ``w`` (Rodrigues),
``(u, v) = X_cam[:2] / X_cam[2]``, and the pixel ``f (1 + k (u^2 + v^2)) (u, v) + (cx, cy)``
with the principal point ``(cx, cy)`` fixed (data), as pycolmap's bundle adjuster refines the
focal length and the extra parameter but not the principal point. The residuals are the
projections less the observations, an ``(num_observations, 2)`` array.

Gauge (a similarity of the world, 7 degrees of freedom, leaves the cost unchanged): the poses
``[w, t]`` of cameras 0 and 1 are held at their true values: :func:`residual` reads them from
its data (``fixed_poses``), not from the parameters, so those 12 entries of ``cameras`` have
empty Jacobian columns and stay at their start. COLMAP's ``TWO_CAMS_FROM_WORLD`` gauge holds
the first pose and one coordinate of the second's translation; holding both poses is what
pycolmap's ``BundleAdjustmentConfig.set_constant_rig_from_world_pose`` expresses exactly, so
the benchmark's Ceres run solves the same problem. The other unknowns (47 poses, every focal
length and ``k``, every point) then have a unique minimiser near the truth.

Each residual row touches the 8 entries of one camera and the 3 of one point: the points are a
block-diagonal group (every row touches one 3-column block), which the Schur-complement solver
(:mod:`jacopt.solvers.schur_lm`; Triggs, McLauchlan, Hartley & Fitzgibbon 2000, "Bundle
adjustment -- a modern synthesis") eliminates. :func:`jac_sparsity` gives the pattern
analytically.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

__all__ = ["BundleAdjustmentScene", "make_scene", "bal_scene", "small_scene", "residual",
           "jac_sparsity", "CAMERA_SIZE", "FIXED_CAMERAS", "IMAGE_SIZE"]

CAMERA_SIZE = 8
"""Numbers per camera: angle-axis rotation (3), translation (3), focal length, radial ``k``."""
FIXED_CAMERAS = 2
"""The poses of cameras ``0 .. FIXED_CAMERAS - 1`` are held fixed (the gauge)."""
IMAGE_SIZE = (1024, 768)
"""Image width and height in pixels (pycolmap's synthetic default)."""


class BundleAdjustmentScene(NamedTuple):
    """A scene: ``x_true`` and ``x0`` (the start), each ``{"cameras": (num_cameras, 8),
    "points": (num_points, 3)}``; ``args`` for :func:`residual` (``camera_index``,
    ``point_index``, ``observations``, ``principal_points``, ``fixed_poses``)."""

    x_true: Any
    x0: Any
    args: tuple

    @property
    def num_cameras(self) -> int:
        return int(self.x0["cameras"].shape[0])

    @property
    def num_points(self) -> int:
        return int(self.x0["points"].shape[0])

    @property
    def num_observations(self) -> int:
        return int(self.args[0].shape[0])

    def jac_sparsity(self) -> sp.csr_array:
        """The pattern of :func:`residual`'s flat Jacobian (:func:`jac_sparsity`)."""
        return jac_sparsity(self.num_cameras, self.num_points, np.asarray(self.args[0]),
                            np.asarray(self.args[1]))


def rotation_matrix(w):
    """The rotation matrices ``R(w)`` (..., 3, 3) of angle-axis vectors ``w`` (..., 3) by
    Rodrigues' formula, with its first-order form ``I + [w]_x`` near ``w = 0`` (as Ceres'
    ``AngleAxisToRotationMatrix``), so derivatives stay finite there."""
    theta2 = jnp.sum(w * w, axis=-1)[..., None, None]
    small = theta2 < 1e-14
    theta = jnp.sqrt(jnp.where(small, 1.0, theta2))
    zero = jnp.zeros_like(w[..., 0])
    cross = jnp.stack([jnp.stack([zero, -w[..., 2], w[..., 1]], -1),
                       jnp.stack([w[..., 2], zero, -w[..., 0]], -1),
                       jnp.stack([-w[..., 1], w[..., 0], zero], -1)], -2)  # [w]_x
    outer = w[..., :, None] * w[..., None, :]
    eye = jnp.eye(3, dtype=w.dtype)
    full = (eye * jnp.cos(theta) + cross * (jnp.sin(theta) / theta)
            + outer * ((1.0 - jnp.cos(theta)) / (theta * theta)))
    return jnp.where(small, eye + cross, full)


def project(cameras, points, principal_points, camera_index, point_index):
    """SIMPLE_RADIAL pixels of the observations ``(camera_index[i], point_index[i])`` of
    ``points`` (num_points, 3) through ``cameras`` (num_cameras, 8) with principal points
    (num_cameras, 2). The rotation matrices are formed once per camera; the rotations, the
    camera parameters and the principal points are then gathered per observation as three
    separate arrays."""
    R = rotation_matrix(cameras[:, :3]).reshape(-1, 9)[camera_index]
    cam = cameras[camera_index]
    pp = principal_points[camera_index]
    X = points[point_index]
    Xc = [R[:, 3 * i] * X[:, 0] + R[:, 3 * i + 1] * X[:, 1] + R[:, 3 * i + 2] * X[:, 2]
          + cam[:, 3 + i] for i in range(3)]
    u, v = Xc[0] / Xc[2], Xc[1] / Xc[2]
    f, k = cam[:, 6], cam[:, 7]
    radial = f * (1.0 + k * (u * u + v * v))
    return jnp.stack([radial * u + pp[:, 0], radial * v + pp[:, 1]], axis=1)


def residual(params, camera_index, point_index, observations, principal_points, fixed_poses):
    """Reprojection residuals ``(num_observations, 2)`` in pixels: ``params`` is
    ``{"cameras": (num_cameras, 8), "points": (num_points, 3)}``; observation ``i`` is point
    ``point_index[i]`` seen by camera ``camera_index[i]`` at pixel ``observations[i]``; the
    poses of the first :data:`FIXED_CAMERAS` cameras are ``fixed_poses`` (the gauge, module
    docstring)."""
    cams = params["cameras"]
    gauge = jnp.concatenate([fixed_poses, cams[:FIXED_CAMERAS, 6:]], axis=1)
    cams = jnp.concatenate([gauge, cams[FIXED_CAMERAS:]], axis=0)
    return project(cams, params["points"], principal_points, camera_index,
                   point_index) - observations


def jac_sparsity(num_cameras: int, num_points: int, camera_index, point_index) -> sp.csr_array:
    """The pattern of :func:`residual`'s Jacobian, flat residuals (row ``2 i + a`` for
    observation ``i``, coordinate ``a``) by flat parameters (``ravel_pytree`` order: the
    ``cameras`` entries, then the ``points``): each row has the 8 entries of its camera (the
    focal length and ``k`` only for a gauge camera) and the 3 of its point."""
    camera_index = np.asarray(camera_index, np.int64)
    point_index = np.asarray(point_index, np.int64)
    nobs = camera_index.shape[0]
    cam_cols = camera_index[:, None] * CAMERA_SIZE + np.arange(CAMERA_SIZE)[None, :]
    cam_used = np.ones((nobs, CAMERA_SIZE), bool)
    cam_used[camera_index < FIXED_CAMERAS, :6] = False
    pt_cols = num_cameras * CAMERA_SIZE + point_index[:, None] * 3 + np.arange(3)[None, :]
    cols = np.concatenate([cam_cols, pt_cols], axis=1)
    used = np.concatenate([cam_used, np.ones((nobs, 3), bool)], axis=1)
    width = cols.shape[1]
    rows = np.repeat(np.arange(2 * nobs), width)
    cols2 = np.repeat(cols, 2, axis=0).reshape(-1)
    used2 = np.repeat(used, 2, axis=0).reshape(-1)
    shape = (2 * nobs, num_cameras * CAMERA_SIZE + 3 * num_points)
    pattern = sp.csr_array((np.ones(int(used2.sum()), bool), (rows[used2], cols2[used2])),
                           shape=shape)
    pattern.sort_indices()
    return pattern


def _look_at(center):
    """Angle-axis ``w`` and translation ``t`` of a camera at ``center`` looking at the origin
    (camera z forward, y down)."""
    z = -center / np.linalg.norm(center)
    x = np.cross(np.array([0.0, 0.0, 1.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    angle = np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    w = axis / (2.0 * np.sin(angle)) * angle
    return w, -R @ center


def make_scene(num_cameras: int, num_points: int, track_length: int = 4, *, seed: int = 0,
               pixel_noise: float = 1.0, rotation_noise: float = 0.01,
               translation_noise: float = 0.05, point_noise: float = 0.05,
               focal_noise: float = 0.01, dtype=np.float64) -> BundleAdjustmentScene:
    """A scene from ``seed`` (module docstring): cameras on a ring of radius 4 (heights within
    +-0.5) looking at the origin, focal lengths ``1280 (1 +- 5%)``, ``k ~ N(0.05, 0.01)``,
    principal point at the image centre; points uniform in the unit ball; each point seen by
    ``track_length`` distinct cameras. Observations get ``N(0, pixel_noise^2)`` noise. The
    start perturbs the truth: rotations by ``N(0, rotation_noise^2)`` (radians, added to
    ``w``), translations and points by ``N(0, noise^2)``, focal lengths by a factor
    ``1 + N(0, focal_noise^2)``; ``k`` starts at 0. The gauge cameras' poses are exact."""
    if num_cameras <= FIXED_CAMERAS or track_length < 2 or track_length > num_cameras:
        raise ValueError(f"need num_cameras > {FIXED_CAMERAS} and 2 <= track_length <= "
                         f"num_cameras; got {num_cameras}, {track_length}.")
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(num_cameras) / num_cameras + rng.uniform(0, 0.1, num_cameras)
    centers = np.stack([4 * np.cos(angles), 4 * np.sin(angles),
                        rng.uniform(-0.5, 0.5, num_cameras)], axis=1)
    cameras = np.zeros((num_cameras, CAMERA_SIZE))
    for c in range(num_cameras):
        cameras[c, :3], cameras[c, 3:6] = _look_at(centers[c])
    cameras[:, 6] = 1280.0 * (1 + rng.uniform(-0.05, 0.05, num_cameras))
    cameras[:, 7] = rng.normal(0.05, 0.01, num_cameras)
    direction = rng.normal(size=(num_points, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    points = direction * rng.uniform(0, 1, (num_points, 1)) ** (1 / 3)
    camera_index = np.argsort(rng.uniform(size=(num_points, num_cameras)), axis=1)
    camera_index = np.sort(camera_index[:, :track_length], axis=1).reshape(-1)
    point_index = np.repeat(np.arange(num_points), track_length)
    principal = np.tile(np.array([IMAGE_SIZE[0] / 2, IMAGE_SIZE[1] / 2]), (num_cameras, 1))
    truth = {"cameras": cameras, "points": points}
    exact = np.asarray(project(jnp.asarray(cameras), jnp.asarray(points),
                               jnp.asarray(principal), camera_index, point_index))
    observations = exact + pixel_noise * rng.normal(size=exact.shape)

    start_cams = cameras.copy()
    start_cams[:, :3] += rotation_noise * rng.normal(size=(num_cameras, 3))
    start_cams[:, 3:6] += translation_noise * rng.normal(size=(num_cameras, 3))
    start_cams[:, 6] *= 1 + focal_noise * rng.normal(size=num_cameras)
    start_cams[:, 7] = 0.0
    start_cams[:FIXED_CAMERAS, :6] = cameras[:FIXED_CAMERAS, :6]
    start_points = points + point_noise * rng.normal(size=points.shape)

    def tree(cams, pts):
        return {"cameras": jnp.asarray(cams, dtype), "points": jnp.asarray(pts, dtype)}

    args = (jnp.asarray(camera_index, jnp.int32), jnp.asarray(point_index, jnp.int32),
            jnp.asarray(observations, dtype), jnp.asarray(principal, dtype),
            jnp.asarray(cameras[:FIXED_CAMERAS, :6], dtype))
    return BundleAdjustmentScene(tree(*truth.values()), tree(start_cams, start_points), args)


def bal_scene(seed: int = 0, **options) -> BundleAdjustmentScene:
    """A scene at the size of BAL's ``49-7776``: 49 cameras, 7,776 points, track length 4
    (31,104 observations, 62,208 residuals, 23,720 unknowns)."""
    return make_scene(49, 7776, 4, seed=seed, **options)


def small_scene(seed: int = 0, **options) -> BundleAdjustmentScene:
    """A scene for tests: 8 cameras, 200 points, track length 4 (800 observations)."""
    return make_scene(8, 200, 4, seed=seed, **options)
