"""The policy problem registry (:mod:`jacopt.problems.policy_problems`): reproducible seeds,
dtypes, names, and the registered solver reaching the closed-form optimum."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jacopt.problems import policy_problems as pp
from jacopt.problems import softmax_policy as sp


def test_registry_seeds_are_reproducible():
    assert pp.names() == ("bandit", "entropy-bandit", "entropy-mdp", "entropy-mdp-cold",
                          "policy-distill")
    for name in pp.names():
        a, b, c = pp.get(name, seed=0), pp.get(name, seed=0), pp.get(name, seed=1)
        np.testing.assert_array_equal(a.params0, b.params0)
        np.testing.assert_array_equal(a.task.rewards, b.task.rewards)
        assert a.optimal_value == b.optimal_value
        assert not np.array_equal(a.task.rewards, c.task.rewards)
        assert a.target_loss > 0 and a.solver["entry"] in ("minimize", "least_squares")


def test_float32_problem_keeps_dtype():
    problem = pp.get("entropy-mdp", dtype=jnp.float32)
    assert problem.params0.dtype == jnp.float32
    assert problem.task.transitions.dtype == jnp.float32
    assert jax.jit(sp.expected_return)(problem.params0, problem.task).dtype == jnp.float32
    assert problem.target_loss == 1e-4


def test_unknown_problem_lists_valid_names():
    with pytest.raises(ValueError, match="entropy-bandit"):
        pp.get("cartpole")


@pytest.mark.parametrize("solver", ["newton", "bfgs"])
def test_minimize_reaches_closed_form_optimum(bandit, solver):
    # At tau = 0.3 no optimal probability is tiny; at tau = 0.1 (entropy-mdp-cold) Newton and
    # BFGS can stall on a softmax-saturation plateau instead (as SciPy's do), see the registry.
    assert bandit.solver["solver"] == "newton"
    result = bandit.solve(solver=solver, gtol=1e-10, max_steps=500)
    assert bandit.loss(result.params) < 1e-10
    np.testing.assert_allclose(sp.probs(result.params, bandit.task.features),
                               sp.probs(bandit.optimal_params, bandit.task.features), atol=1e-6)
