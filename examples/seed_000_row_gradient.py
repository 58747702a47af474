"""Seed 000 (Theano): the gradient of one row of ``y = X @ W.T`` with respect to that row of X.

The question: "I have ``y = X @ W.T`` for a batch X of shape (B, n). How do I get the derivative
of ``y[i]`` with respect to ``X[i]``? ``T.grad(y[i].sum(), X[i])`` raises DisconnectedInputError,
and the workaround is a full (B*m) x (B*n) Jacobian that is mostly zeros."

The answer: ``jacopt.batch_jacobian``. Row i of y depends only on row i of X, so one call
returns J[i] = d y[i] / d X[i] for every i, shape (B, m, n), in min(n, m) passes over the whole
batch (never B x n). ``check=True`` verifies, with one extra JVP, that the rows really are
independent. For this linear map every J[i] is W.

Run: python examples/seed_000_row_gradient.py
"""
import jax

jax.config.update("jax_enable_x64", True)  # float64 before any array is made

import numpy as np  # noqa: E402

import jacopt  # noqa: E402


def main():
    B, n, m = 32, 5, 3
    W = jax.random.normal(jax.random.PRNGKey(0), (m, n))
    X = jax.random.normal(jax.random.PRNGKey(1), (B, n))

    row_jacobians = jacopt.batch_jacobian(lambda X: X @ W.T, check=True)(X)  # (B, m, n)

    print(f"J has shape {row_jacobians.shape}: d y[i] / d X[i] for each of the {B} rows")
    print("J[7] =\n", np.asarray(row_jacobians[7]))
    for i in range(B):
        np.testing.assert_array_equal(row_jacobians[i], W)
    print("every J[i] equals W exactly")

    # Rows that interact (here through the batch mean) are caught by the check:
    try:
        jacopt.batch_jacobian(lambda X: X - X.mean(axis=0), check=True)(X)
    except ValueError as error:
        print("interacting rows are refused:", str(error).split(".")[0])
    else:
        raise AssertionError("check=True should have refused a batch mean")


if __name__ == "__main__":
    main()
