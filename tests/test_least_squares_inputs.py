"""Bad input to least_squares raises before any solving, naming the argument."""
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt


def fun(b, t):
    return b[0] * jnp.exp(-b[1] * t) - 1.0


T = jnp.linspace(0, 1, 5)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x0=jnp.array([1.0, jnp.nan])), ValueError, r"x0.*non-finite"),
        (dict(x0=jnp.array([1.0, jnp.inf])), ValueError, r"x0.*non-finite"),
        (dict(x0=["a", "b"]), TypeError, r"x0\[0\] must be numeric"),
        (dict(x0=jnp.zeros(0)), ValueError, r"x0.*empty"),
        (dict(solver="newton"), ValueError, r"Unknown solver 'newton'.*'lm'"),
        (dict(loss="l2"), ValueError, r"Unknown loss 'l2'.*soft_l1"),
        (dict(f_scale=0.0), ValueError, r"f_scale"),
        (dict(bounds=(2.0, 1.0)), ValueError, r"bounds: lower > upper"),
        (dict(bounds=(jnp.array([0.0, 5.0]), 10.0)), ValueError, r"x0 is outside bounds"),
        (dict(bounds=(jnp.zeros(3), 1.0)), ValueError, r"bounds\[0\]"),
        (dict(bounds=(0.0,)), ValueError, r"bounds must be a pair"),
        (dict(x_scale=jnp.ones(3)), ValueError, r"x_scale"),
        (dict(x_scale=-1.0), ValueError, r"x_scale"),
        (dict(x_scale="auto"), ValueError, r"x_scale"),
        (dict(max_steps=-1), ValueError, r"max_steps"),
        (dict(verbose=3), ValueError, r"verbose"),
        (dict(xtol=-1.0), ValueError, r"xtol"),
        (dict(args=T), TypeError, r"args must be a tuple"),
        (dict(jac=lambda b, t: jnp.zeros((5, 3))), ValueError, r"jac returned shape \(5, 3\)"),
    ],
)
def test_bad_input_names_the_argument(kwargs, error, match):
    call = dict(x0=jnp.array([1.0, 1.0]), args=(T,))
    call.update(kwargs)
    x0 = call.pop("x0")
    with pytest.raises(error, match=match):
        jacopt.least_squares(fun, x0, **call)


def test_scalar_residual_function_is_rejected():
    with pytest.raises(ValueError, match="fun returned a scalar"):
        jacopt.least_squares(lambda b: jnp.sum(b ** 2), jnp.ones(2))


def test_residual_dtype_must_match_x0():
    with pytest.raises(TypeError, match="fun returned residuals of dtype float64"):
        jacopt.least_squares(lambda b: b.astype(jnp.float64) - 1.0, jnp.ones(2, jnp.float32))


def test_integer_start_is_accepted_as_float():
    res = jacopt.least_squares(lambda b: b - 2.0, np.array([0, 0]))
    np.testing.assert_allclose(res.params, [2.0, 2.0])
    assert res.params.dtype == jnp.float64


def test_bounds_with_a_solver_that_takes_none_name_every_solver_that_does():
    import dataclasses

    from jacopt.least_squares import SOLVERS
    from jacopt.solvers.least_squares_problem import LeastSquaresSolver

    @dataclasses.dataclass(frozen=True)
    class Unbounded(LeastSquaresSolver):
        pass

    with pytest.raises(ValueError, match="bounds are supported by") as info:
        jacopt.least_squares(lambda x: x - 1.0, jnp.zeros(2), bounds=(0.0, 2.0),
                             solver=Unbounded())
    for name in SOLVERS:
        assert repr(name) in str(info.value)
