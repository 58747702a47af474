"""Every least-squares solver checks its options when it is constructed, with a ValueError that
names the option (before any tracing or solving)."""
import dataclasses

import pytest

import jacopt
from jacopt.least_squares import SOLVERS

BAD = {
    "ftol": [-1.0, float("nan"), "1e-8"],
    "xtol": [-1e-15, float("inf")],
    "gtol": [-1.0, True],
    "initial_radius_factor": [0.0, -1.0],
    "contraction": [-0.1, 1.0],
    "geodesic": [1],
    "geodesic_ratio": [0.0],
    "stall_limit": [0, 2.5],
    "max_inner_steps": [0],
    "num_probes": [-1],
    "initial_damping": [0.0],
    "line_search": [None],
}


def _cases():
    for name, cls in SOLVERS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        for option, values in BAD.items():
            if option in fields:
                for value in values:
                    yield pytest.param(cls, option, value, id=f"{name}-{option}={value!r}")


@pytest.mark.parametrize("cls, option, value", list(_cases()))
def test_bad_option_raises_at_construction_naming_it(cls, option, value):
    with pytest.raises(ValueError, match=option):
        cls(**{option: value})


@pytest.mark.parametrize("name", list(SOLVERS))
def test_defaults_and_zero_tolerances_are_valid(name):
    cls = SOLVERS[name]
    cls()
    cls(ftol=0.0, xtol=0.0, gtol=0.0)


def test_every_builtin_solver_takes_bounds():
    """least_squares passes bounds to each built-in solver (dogleg included) and the answer
    stays in the box; the bound is active at the unconstrained minimiser x = 2."""
    import jax.numpy as jnp

    def fun(x):
        return jnp.stack([x[0] - 2.0, 0.1 * x[0] * x[1], x[1] - 0.5])

    for name in SOLVERS:
        res = jacopt.least_squares(fun, jnp.array([0.5, 0.2]), solver=name,
                                   bounds=(jnp.array([0.0, 0.0]), jnp.array([1.0, 1.0])))
        assert bool(res.success), (name, res.status_name)
        assert abs(float(res.params[0]) - 1.0) < 1e-8, (name, res.params)
