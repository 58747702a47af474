"""Fisher matrix, Fisher-vector products, natural gradient and NPG
(:mod:`jacopt.problems.natural_gradient`) against the expected outer product of scores, the
Fisher system, and the closed forms of soft policy iteration."""
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from _policy_helpers import explicit_scores, random_X

import jacopt
from jacopt.problems import natural_gradient as ng
from jacopt.problems import policy_problems as pp
from jacopt.problems import softmax_policy as sp


def test_fisher_matrix_is_the_expected_outer_product_of_scores(mdp):
    X = random_X(mdp.task)
    t = mdp.task
    d = np.asarray(jax.jit(sp.state_weights)(X, t))
    pi = scipy.special.softmax(np.asarray(t.features @ X.T), axis=1)
    scores = explicit_scores(X, t.features)
    expected = np.einsum("sa,sai,saj->ij", d[:, None] * pi, scores, scores)
    fisher = jax.jit(ng.fisher_matrix)(X, t)
    np.testing.assert_allclose(fisher, expected, atol=1e-13)
    # singular along "add u^T phi(s) to every logit of state s": X -> X + 1 u^T
    shift = np.outer(np.ones(4), np.random.default_rng(0).normal(size=10)).ravel()
    np.testing.assert_allclose(fisher @ shift, 0.0, atol=1e-13)
    assert np.linalg.eigvalsh(np.asarray(fisher)).min() > -1e-13


def test_fisher_operator_matches_matrix(bandit):
    X = random_X(bandit.task)
    v = jnp.asarray(np.random.default_rng(1).normal(size=X.shape))
    product = jax.jit(lambda x, u: ng.fisher_operator(x, bandit.task)(u))(X, v)
    np.testing.assert_allclose(product.ravel(),
                               jax.jit(ng.fisher_matrix)(X, bandit.task) @ v.ravel(), atol=1e-14)


def test_natural_gradient_solves_fisher_system(bandit):
    X = random_X(bandit.task)
    t = bandit.task
    fisher, grad, w, damped, cg = jax.jit(lambda x: (
        ng.fisher_matrix(x, t), sp.policy_gradient(x, t), ng.natural_gradient(x, t),
        ng.natural_gradient(x, t, damping=1e-3),
        ng.natural_gradient(x, t, damping=1e-3, matrix_free=True, tol=1e-12)))(X)
    np.testing.assert_allclose(fisher @ w.ravel(), grad.ravel(), atol=1e-12)
    np.testing.assert_allclose(cg, damped, rtol=1e-8, atol=1e-10)


def test_npg_at_step_one_over_tau_is_exact_on_the_bandit(bandit):
    tau = float(bandit.task.temperature)
    X = jax.jit(ng.npg_step)(bandit.params0, bandit.task, 1 / tau)
    assert bandit.loss(X) < 1e-13
    np.testing.assert_allclose(sp.probs(X, bandit.task.features),
                               scipy.special.softmax(np.asarray(bandit.task.rewards) / tau, 1),
                               atol=1e-12)


def test_npg_is_soft_policy_iteration_on_the_mdp(mdp):
    step = jax.jit(lambda x: ng.npg_step(x, mdp.task, 1 / float(mdp.task.temperature)))
    X, gaps = mdp.params0, []
    for _ in range(4):
        X = step(X)
        gaps.append(float(mdp.loss(X)))
    assert gaps[0] < 1e-2 and gaps[1] < 1e-6 and abs(gaps[3]) < 1e-12, gaps


def test_distillation_residual_vanishes_at_target_and_its_gauss_newton_is_fisher():
    problem = pp.get("policy-distill")
    X = problem.optimal_params
    np.testing.assert_allclose(problem.residual(X, *problem.args), 0.0, atol=1e-13)
    jac = jax.jit(jacopt.jacobian(problem.residual, as_matrix=True))(X, *problem.args)
    fisher = jax.jit(ng.fisher_matrix)(X, problem.task, problem.task.initial)
    np.testing.assert_allclose(jac.T @ jac, fisher, atol=1e-13)
    assert problem.loss(problem.params0) > 1e-2
