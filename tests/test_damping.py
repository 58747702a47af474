"""Nielsen's damping update against the formula of Madsen, Nielsen & Tingleff (2004), section
3.2, written out here in plain Python."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacopt.solvers.damping import nielsen_update


def _nielsen(lam, nu, ratio, accepted):
    if accepted:
        return lam * max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3), 2.0
    return lam * nu, 2.0 * nu


@pytest.mark.parametrize("ratio", [1e-6, 0.25, 0.5, 0.75, 0.9, 1.0, 1.7])
def test_an_accepted_step_scales_lam_by_max_of_a_third_and_one_minus_the_cube(ratio):
    lam, nu = nielsen_update(jnp.asarray(0.3), jnp.asarray(8.0), ratio, True)
    expected_lam, expected_nu = _nielsen(0.3, 8.0, ratio, True)
    np.testing.assert_allclose(lam, expected_lam, rtol=1e-15)
    assert float(nu) == expected_nu == 2.0
    # a good step never cuts lam by more than 3; rho = 1/2 leaves it unchanged
    assert float(lam) >= 0.1 - 1e-16
    if ratio == 0.5:
        assert float(lam) == 0.3


@pytest.mark.parametrize("ratio", [-np.inf, -3.0, 0.0, 0.8])
def test_a_rejected_step_multiplies_lam_by_nu_and_doubles_nu(ratio):
    # 0.8: a caller may reject a step Nielsen would take (e.g. non-finite derivatives there)
    lam, nu = nielsen_update(jnp.asarray(0.3), jnp.asarray(8.0), ratio, False)
    assert (float(lam), float(nu)) == _nielsen(0.3, 8.0, ratio, False) == (2.4, 16.0)


def test_consecutive_rejections_raise_lam_ever_faster_and_an_acceptance_resets_nu():
    lam, nu = jnp.asarray(1.0), jnp.asarray(2.0)
    expected = (1.0, 2.0)
    for ratio, accepted in [(-1.0, False)] * 4 + [(0.9, True), (-np.inf, False)]:
        lam, nu = nielsen_update(lam, nu, ratio, accepted)
        expected = _nielsen(*expected, ratio, accepted)
        np.testing.assert_allclose((lam, nu), expected, rtol=1e-15)
    # 2 * 4 * 8 * 16 = 1024 after four rejections, then the good step, then 2 again
    np.testing.assert_allclose(lam, 1024 * (1 - 0.8 ** 3) * 2, rtol=1e-15)


def test_lam_stays_at_least_the_smallest_normal_number_and_keeps_its_dtype():
    tiny32 = np.finfo(np.float32).tiny
    lam, nu = nielsen_update(jnp.asarray(tiny32, jnp.float32), jnp.asarray(2.0, jnp.float32),
                             jnp.asarray(1.0, jnp.float32), True)
    assert lam.dtype == nu.dtype == jnp.float32
    assert float(lam) == tiny32


def test_elementwise_under_jit_and_vmap():
    lams = jnp.array([1.0, 2.0, 3.0])
    nus = jnp.array([2.0, 4.0, 2.0])
    ratios = jnp.array([0.9, -jnp.inf, 0.2])
    accepted = jnp.array([True, False, True])
    lam, nu = jax.jit(jax.vmap(nielsen_update))(lams, nus, ratios, accepted)
    for i in range(3):
        np.testing.assert_allclose(
            (lam[i], nu[i]),
            _nielsen(float(lams[i]), float(nus[i]), float(ratios[i]), bool(accepted[i])),
            rtol=1e-15)
