"""Shared by the policy tests (their fixtures ``bandit`` and ``mdp`` are in ``conftest.py``):
a random parameter matrix, and the score vectors written out in NumPy (the independent
reference)."""
import jax.numpy as jnp
import numpy as np
import scipy.special


def random_X(task, seed=3, scale=0.7):
    rng = np.random.default_rng(seed)
    return jnp.asarray(scale * rng.normal(size=(task.rewards.shape[1], task.features.shape[1])))


def explicit_scores(X, features):
    """g[s, a] = vec((e_a - pi_s) phi_s^T) in NumPy: (S, A, A*F)."""
    X, phi = np.asarray(X), np.asarray(features)
    pi = scipy.special.softmax(phi @ X.T, axis=1)
    num_actions = X.shape[0]
    return np.stack([
        np.stack([np.outer(np.eye(num_actions)[a] - pi[s], phi[s]).ravel()
                  for a in range(num_actions)])
        for s in range(phi.shape[0])
    ])
