"""Seed 004 (PyTorch): the 20 x 47 Jacobian of an MLP's outputs with respect to all its weights.

The question: "I have a [6, 4, 3, 1] tanh MLP and 20 inputs, so 20 outputs. I need the Jacobian
of the 20 outputs with respect to all 47 weights and biases, as a 20 x 47 matrix.
``outputs.backward()`` says 'grad can be implicitly created only for scalar outputs'."

The answer: one call, ``jacopt.jacobian(model, as_matrix=True)(params, X)``: rows are the 20
outputs, columns the 47 parameters in ``ravel_pytree`` order (reverse mode: 20 VJPs < 47 JVPs).
``jacopt.TreeIndex(params)`` says which column is which weight, and unravels a row back into
the parameter structure. Checked here against central finite differences in float64.

Run: python examples/seed_004_mlp_jacobian.py
"""
import jax

jax.config.update("jax_enable_x64", True)  # float64 before any array is made

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jacopt  # noqa: E402
from jacopt._finite_differences import central_difference_jacobian  # noqa: E402

SIZES = [6, 4, 3, 1]


def init_params(key):
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        key, kw, kb = jax.random.split(key, 3)
        params.append((jax.random.normal(kw, (n_out, n_in)) / np.sqrt(n_in),
                       0.1 * jax.random.normal(kb, (n_out,))))
    return params


def model(params, X):
    """X: (20, 6) -> (20,) outputs; tanh on the hidden layers."""
    h = X
    for W, b in params[:-1]:
        h = jnp.tanh(h @ W.T + b)
    W, b = params[-1]
    return (h @ W.T + b)[:, 0]


def main():
    params = init_params(jax.random.PRNGKey(0))
    X = jax.random.normal(jax.random.PRNGKey(1), (20, 6))

    J = jacopt.jacobian(model, as_matrix=True)(params, X)
    print("Jacobian shape", J.shape)
    assert J.shape == (20, 47)

    fd = central_difference_jacobian(lambda p: model(p, X), params)
    error = np.max(np.abs(np.asarray(J) - fd))
    print(f"max difference from central finite differences: {error:.1e}")
    assert error < 1e-8

    columns = jacopt.TreeIndex(params)
    col = columns.index((1, 1, 2))  # params[1][1][2]: the third bias of the second layer
    print(f"column {col} is params{columns.label(col)}; column 9 is params{columns.label(9)}")
    assert columns.path(col) == (1, 1, 2)
    # d output_0 / d b1[2] equals that column, and unravel gives row 0 shaped like params
    row0 = columns.unravel(J[0])
    assert row0[1][1][2] == J[0, col]
    print("last-layer weight block J[:, W2] has shape", J[:, columns.leaf_slice((2, 0))].shape)


if __name__ == "__main__":
    main()
