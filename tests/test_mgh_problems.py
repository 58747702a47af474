"""jacopt.problems.mgh against independent numbers: MINPACK's driver output (the residual norm
at x0, 10 x0, 100 x0 and its final points), closed-form minimisers, central differences, and
SciPy's MINPACK ``lm`` reaching an accepted optimum from x0."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares as scipy_least_squares

from jacopt.problems import mgh

jax.config.update("jax_enable_x64", True)

NAMES = tuple(mgh.PROBLEMS)

# The "initial l2 norm of the residuals" MINPACK's lmder driver prints for factors 1, 10, 100
# (cminpack examples/ref/lmddrv.fortran.ref; Meyer is run from two factors, Jennrich-Sampson,
# Box 3-D, Osborne 1 and 2 from one) and its hybrd driver for the square systems
# (examples/ref/hybdrv.ref, problems of MGH's form only). Printed to 8 and 7 digits.
MINPACK_INITIAL_NORMS = {
    "rosenbrock": (4.9193496e+00, 1.3400631e+03, 1.4300005e+05),
    "freudenstein_roth": (2.0012496e+01, 1.2432834e+04, 1.1426455e+07),
    "powell_badly_scaled": (1.065487, 1.0),
    "jennrich_sampson": (6.4585650e+01,),
    "helical_valley": (5.0000000e+01, 1.0295630e+02, 9.9126182e+02),
    "bard": (6.4561363e+00, 3.6141853e+01, 3.8411468e+02),
    "meyer": (4.1153467e+04, 4.1682169e+06),
    "box_3d": (3.2111584e+01,),
    "powell_singular": (1.4662878e+01, 1.2709839e+03, 1.2688790e+05),
    "kowalik_osborne": (7.2891510e-02, 2.9793701e+00, 2.9959062e+01),
    "brown_dennis": (2.8154384e+03, 5.5507335e+05, 6.1211252e+07),
    "osborne_1": (9.3756402e-01,),
    "osborne_2": (1.4468654e+00,),
    "watson_6": (5.4772256e+00, 6.4331258e+03, 6.7425604e+05),
    "watson_9": (5.4772256e+00, 1.2088127e+04, 1.2691093e+06),
    "watson_12": (5.4772256e+00, 1.9220759e+04, 2.0189180e+06),
    "trigonometric_10": (0.8411753e-01, 0.2030519e+02, 0.9336937e+02),
    "brown_almost_linear_10": (1.6530216e+01, 9.7656240e+06, 9.7656250e+16),
    "discrete_boundary_value_10": (0.2808058e-01, 0.5255526e+00, 0.1065739e+03),
    "discrete_integral_equation_10": (0.2518270e+00, 0.6116833e+01, 0.1269309e+04),
    "broyden_tridiagonal_10": (0.4582576e+01, 0.6391009e+03, 0.6333758e+05),
    "broyden_banded_10": (0.1897367e+02, 0.1713092e+05, 0.1594986e+08),
    "linear_full_rank_5_10": (5.0000000e+00,),
    "linear_full_rank_5_50": (8.0622577e+00,),
    "linear_rank_1_5_10": (2.9152187e+02,),
    "linear_rank_1_5_50": (3.1016004e+03,),
    "linear_rank_1_zero_5_10": (1.2603968e+02,),
    "linear_rank_1_zero_5_50": (1.7489500e+03,),
    "chebyquad_1_8": (1.8862380e+00, 5.3833444e+09, 1.1808873e+18),
    "chebyquad_8": (1.9651386e-01,),
    "chebyquad_9": (1.6994993e-01,),
    "chebyquad_10": (1.8374783e-01,),
}

# F(x0) by hand from MGH's definitions for problems neither driver covers.
HAND_F_AT_X0 = {
    "brown_badly_scaled": (1 - 1e6) ** 2 + (1 - 2e-6) ** 2 + 1.0,   # r = (1 - 1e6, 1 - 2e-6, -1)
    "beale": 1.5**2 + 2.25**2 + 2.625**2,                             # x2 = 1: x1 (1 - x2^i) = 0
    "penalty_2_4": 0.3**2 + 1e-5 * 3 * (math.exp(0.05) - math.exp(-0.1)) ** 2
    + 1e-5 * sum((2 * math.exp(0.05) - math.exp(i / 10) - math.exp((i - 1) / 10)) ** 2
                 for i in (2, 3, 4)) + (0.25 * 10 - 1.0) ** 2,
    "gulf": sum((math.exp(-abs(25 + (-50 * math.log(i / 100)) ** (2 / 3) - 2.5) ** 0.15 / 5)
                 - i / 100) ** 2 for i in range(1, 100)),
}

# Points where F is an accepted optimum: closed forms, and MINPACK's lmder final points
# (8 printed digits, lmddrv.fortran.ref), with the optimum they should give.
KNOWN_MINIMISERS = [
    ("rosenbrock", [1.0, 1.0], 0.0),
    ("freudenstein_roth", [5.0, 4.0], 0.0),
    ("freudenstein_roth", [1.1412484e+01, -8.9682791e-01], 48.9842),
    ("brown_badly_scaled", [1e6, 2e-6], 0.0),
    ("beale", [3.0, 0.5], 0.0),
    ("helical_valley", [1.0, 0.0, 0.0], 0.0),
    ("bard", [8.2410577e-02, 1.1330367e+00, 2.3436946e+00], 8.21487e-3),
    ("gulf", [50.0, 25.0, 1.5], 0.0),
    ("box_3d", [1.0, 10.0, 1.0], 0.0),
    ("box_3d", [10.0, 1.0, -1.0], 0.0),
    ("box_3d", [3.0, 3.0, 0.0], 0.0),
    ("powell_singular", [0.0] * 4, 0.0),
    ("wood", [1.0] * 4, 0.0),
    ("kowalik_osborne", [1.9280781e-01, 1.9126265e-01, 1.2305280e-01, 1.3605322e-01],
     3.07505e-4),
    ("brown_dennis", [-1.1595927e+01, 1.3204187e+01, -4.0341736e-01, 2.3677114e-01], 85822.2),
    ("osborne_1", [3.7541005e-01, 1.9358465e+00, -1.4646868e+00, 1.2867534e-02,
                   2.2122701e-02], 5.46489e-5),
    ("biggs_exp6", [1.0, 10.0, 1.0, 5.0, 4.0, 3.0], 0.0),
    ("osborne_2", [1.3099766e+00, 4.3155248e-01, 6.3366126e-01, 5.9942856e-01, 7.5417977e-01,
                   9.0430008e-01, 1.3657995e+00, 4.8237320e+00, 2.3986848e+00, 4.5688755e+00,
                   5.6753421e+00], 4.01377e-2),
    ("watson_6", [-1.5724962e-02, 1.0124349e+00, -2.3299172e-01, 1.2604310e+00,
                  -1.5137303e+00, 9.9299727e-01], 2.28767e-3),
    ("extended_rosenbrock_10", [1.0] * 10, 0.0),
    ("extended_powell_singular_12", [0.0] * 12, 0.0),
    ("variably_dimensioned_10", [1.0] * 10, 0.0),
    ("brown_almost_linear_10", [1.0] * 10, 0.0),
    ("brown_almost_linear_10", [0.0] * 9 + [11.0], 1.0),
    ("linear_full_rank_5_10", [-1.0] * 5, 5.0),
    ("linear_rank_1_5_50", [3.0 / 101.0, 0.0, 0.0, 0.0, 0.0], 50 * 49 / (2 * 101)),
    ("linear_rank_1_zero_5_10", [7.0, 3.0 / 34.0, 0.0, 0.0, -2.0], 124 / 34),
    ("chebyquad_1_8", [9.8173149e-01], 3.55039),
    ("chebyquad_8", [4.3153665e-02, 1.9309164e-01, 2.6632859e-01, 4.9999933e-01,
                     5.0000067e-01, 7.3367141e-01, 8.0690836e-01, 9.5684634e-01], 3.51687e-3),
    ("chebyquad_10", [5.9620267e-02, 1.6670878e-01, 2.3917102e-01, 3.9888529e-01,
                      3.9888367e-01, 6.0111633e-01, 6.0111471e-01, 7.6082898e-01,
                      8.3329122e-01, 9.4037973e-01], 6.50395e-3),
]


@functools.lru_cache(maxsize=None)
def _compiled(name):
    """The problem's residual, its batched form and its Jacobian, jitted once per problem."""
    residual = mgh.load(name).residual
    return jax.jit(residual), jax.jit(jax.vmap(residual)), jax.jit(jax.jacfwd(residual))


# The local minima jacopt.problems.mgh accepts beyond MGH's list (10 digits, refined by SciPy's
# lm at tolerances 1e-15): each must be a strict local minimum of F.
FOUND_LOCAL_MINIMA = [
    ("kowalik_osborne", [0.2253564381, -0.4147538085, -0.0244526962, -0.1779696615],
     4.23675e-4),
    ("trigonometric_10", [0.0539129262, 0.0554965923, 0.0572858819, 0.0593366465,
                          0.0617301284, 0.2578860021, 0.0681141837, 0.072622933, 0.0784616019,
                          0.0837538697], 4.21863e-5),
    ("trigonometric_10", [12.6288624587, 18.9140288034, 12.6330765547, 12.6356151689,
                          12.8417681804, 12.6418162805, 12.645400772, 12.6486438752,
                          12.6500098911, 12.6484594603], 8.78823e-4),
    ("chebyquad_10", [0.1317982889, 0.6148843922, 0.868201712, 0.3851156081, 0.3851156076,
                      0.7923159862, 0.6148843939, 0.9728850626, 0.2076840143, 0.0271149382],
     9.50063e-3),
]


def _f(problem, x):
    r = np.asarray(_compiled(problem.name)[0](jnp.asarray(x, dtype=jnp.float64)))
    assert r.shape == (problem.num_residuals,)
    return float(np.sum(r * r))


def test_registry():
    assert len(NAMES) == 45
    assert sorted({p.number for p in mgh.PROBLEMS.values()}) == list(range(1, 36))
    assert mgh.load("wood") is mgh.PROBLEMS["wood"]
    with pytest.raises(ValueError, match="name: unknown MGH problem 'woods'.*rosenbrock"):
        mgh.load("woods")
    for p in mgh.PROBLEMS.values():
        assert p.num_residuals >= p.dim and p.optima[0] == min(p.optima) == p.f_star


def test_starts_follow_minpack_factor_rule():
    wood = mgh.load("wood")
    for start, factor in zip(mgh.starts(wood), (1, 10, 100)):
        np.testing.assert_array_equal(start, factor * np.array([-3.0, -1.0, -3.0, -1.0]))
    # all-zero start (Watson): factor * ones, as MINPACK's initpt does
    np.testing.assert_array_equal(mgh.starts(mgh.load("watson_6"))[2], np.full(6, 100.0))
    # a zero component of a non-zero start stays zero (helical valley)
    np.testing.assert_array_equal(mgh.starts(mgh.load("helical_valley"))[1], [-10.0, 0.0, 0.0])


@pytest.mark.parametrize("name", sorted(MINPACK_INITIAL_NORMS))
def test_residual_norm_at_starts_matches_minpack(name):
    p = mgh.load(name)
    for start, expected in zip(mgh.starts(p), MINPACK_INITIAL_NORMS[name]):
        assert math.sqrt(_f(p, start)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", sorted(HAND_F_AT_X0))
def test_f_at_x0_by_hand(name):
    p = mgh.load(name)
    assert _f(p, p.x0) == pytest.approx(HAND_F_AT_X0[name], rel=1e-12)


@pytest.mark.parametrize("name,x,f_star", KNOWN_MINIMISERS)
def test_known_minimisers_give_an_accepted_optimum(name, x, f_star):
    p = mgh.load(name)
    assert f_star in p.optima
    f = _f(p, x)
    assert f == pytest.approx(f_star, rel=1e-5, abs=1e-20)
    assert mgh.solved(p, f)


@pytest.mark.parametrize("name,x,f_local", FOUND_LOCAL_MINIMA)
def test_found_local_minima_are_strict_local_minima(name, x, f_local):
    p = mgh.load(name)
    assert f_local in p.optima[1:]
    assert _f(p, x) == pytest.approx(f_local, rel=1e-5)
    x = jnp.asarray(x)

    def fun(z):
        r = p.residual(z)
        return jnp.sum(r * r)

    assert float(jnp.max(jnp.abs(jax.grad(fun)(x)))) <= 1e-7
    assert float(jnp.min(jnp.linalg.eigvalsh(jax.hessian(fun)(x)))) > 1e-2


def test_solved_judgement():
    fr = mgh.load("freudenstein_roth")         # optima 0 and 48.9842
    assert mgh.solved(fr, 0.0) and mgh.solved(fr, 5e-11)
    assert mgh.solved(fr, 48.9842 * (1 + 0.5e-4)) and mgh.solved(fr, 48.9842 * (1 - 0.5e-4))
    assert not mgh.solved(fr, 20.0)            # between the optima: neither
    assert not mgh.solved(fr, 48.9842 * (1 + 2e-4))
    assert not mgh.solved(fr, float("nan")) and not mgh.solved(fr, float("inf"))
    osb = mgh.load("osborne_1")
    assert mgh.solved(osb, 5.46489e-5 * (1 + 0.9e-4))
    assert not mgh.solved(osb, 5.46489e-5 * (1 + 1.1e-4) + 1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_central_differences_at_x0(name):
    """Fourth-order central differences, step relative to each component; the tolerance
    allows for their rounding error (eps |r| / h, which matters where |r| is 1e6)."""
    p = mgh.load(name)
    residual, batched, jacobian = _compiled(name)
    x0 = np.asarray(p.x0)
    jac = np.asarray(jacobian(jnp.asarray(x0)))
    h = 1e-4 * np.maximum(np.abs(x0), 1e-2)
    steps = np.diag(h)
    points = np.concatenate([x0 + 2 * steps, x0 + steps, x0 - steps, x0 - 2 * steps])
    far_up, up, down, far_down = np.split(np.asarray(batched(jnp.asarray(points))), 4)
    fd = ((8 * (up - down) - (far_up - far_down)) / (12 * h[:, None])).T
    rounding = 10 * np.finfo(float).eps * np.abs(np.asarray(residual(jnp.asarray(x0)))).max() / h
    scale = max(1.0, np.abs(jac).max())
    excess = np.abs(jac - fd) - (1e-6 * np.abs(fd) + 1e-8 * scale + rounding[None, :])
    assert excess.max() <= 0.0, (np.unravel_index(excess.argmax(), excess.shape), jac, fd)


def test_scipy_lm_from_x0_reaches_an_accepted_optimum():
    """MINPACK (SciPy's lm, exact Jacobian) from x0 ends at an accepted optimum on every
    problem except Chebyquad n = 1, whose x0 is a stationary point (a local maximum)."""
    failed = {}
    for p in mgh.PROBLEMS.values():
        residual, _, jacobian = _compiled(p.name)
        out = scipy_least_squares(lambda x: np.asarray(residual(x)), p.x0,
                                  jac=lambda x: np.asarray(jacobian(x)), method="lm",
                                  ftol=1e-15, xtol=1e-15, gtol=1e-15)
        f = _f(p, out.x)
        if not mgh.solved(p, f):
            failed[p.name] = f
    assert set(failed) == {"chebyquad_1_8"}
    assert failed["chebyquad_1_8"] == pytest.approx(1.8862380**2, rel=1e-7)
