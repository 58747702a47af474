"""The kernel count the NIST benchmark prints beside compile times
(:func:`jacopt.benchmarks._records.kernel_count`), checked on programs whose kernels are known."""
import jax
import jax.numpy as jnp

from jacopt.benchmarks._records import kernel_count


def _count(fn, *args):
    return kernel_count(jax.jit(fn).lower(*args).compile())


def test_one_elementwise_expression_is_one_kernel():
    # XLA fuses the whole expression into a single loop
    counts = _count(lambda x: jnp.sin(x) * 2.0 + x, jnp.ones(8))
    assert counts["kernels"] == 1


def test_a_qr_adds_its_lapack_call():
    base = _count(lambda a: a * 2.0, jnp.ones((6, 3)))["kernels"]
    with_qr = _count(lambda a: jnp.linalg.qr(a * 2.0, mode="r"), jnp.ones((6, 3)))
    assert with_qr["kernels"] > base  # geqrf is a custom call of its own


def test_a_loop_body_is_counted_and_control_flow_is_not():
    def loop(x):
        return jax.lax.while_loop(lambda c: c[1] < 10,
                                  lambda c: (jnp.sin(c[0]) + 1.0, c[1] + 1), (x, 0))[0]

    counts = _count(loop, jnp.ones(8))
    # the body's sin + add (one fusion or more) and the counter's add, nothing for `while`
    assert 2 <= counts["kernels"] <= 6
    assert counts["kernels"] >= counts["fusions"] + counts["copies"]
