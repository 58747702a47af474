"""The shared loop driver, result types and implicit differentiation, exercised with a toy
Newton solver whose answers are known in closed form."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jacopt
from jacopt import Status
from jacopt._implicit import pinv_symmetric_apply, with_implicit_gradient
from jacopt._loop import run
from jacopt._validate import as_float_tree, check_args, resolve_solver
from jacopt.results import History, MinimizeResult


@dataclasses.dataclass(frozen=True)
class ToyNewton:
    """Newton's method on phi(x, args): enough to drive the loop."""

    gtol: float = 1e-10

    def init(self, problem, x0):
        phi, args = problem
        return (x0, phi(x0, args), jax.grad(phi)(x0, args), jnp.zeros((), x0.dtype))

    def step(self, problem, state):
        phi, args = problem
        x, _, g, _ = state
        p = -jnp.linalg.solve(jax.hessian(phi)(x, args), g)
        x = x + p
        return (x, phi(x, args), jax.grad(phi)(x, args), jnp.linalg.norm(p))

    def terminate(self, problem, state):
        _, f, g, _ = state
        bad = ~jnp.isfinite(f)
        small = jnp.max(jnp.abs(g)) <= self.gtol
        status = jnp.where(bad, Status.NONFINITE, jnp.where(small, Status.GTOL, Status.RUNNING))
        return bad | small, status

    def record(self, problem, state):
        x, f, g, s = state
        return History(f, jnp.max(jnp.abs(g)), s, jnp.ones_like(f), jnp.asarray(True))


def quartic(x, args):
    # minimum at x = c, Hessian 2*a*I + 12 (x-c)^2 at x
    a, c = args
    return a * jnp.sum((x - c) ** 2) + jnp.sum((x - c) ** 4)


def test_loop_converges_and_records_history():
    x0 = jnp.array([3.0, -2.0])
    args = (1.5, jnp.array([1.0, 2.0]))
    out = jax.jit(lambda x0: run(ToyNewton(), (quartic, args), x0, max_steps=50, history=True))(x0)
    assert int(out.status) == Status.GTOL
    np.testing.assert_allclose(out.state[0], args[1], atol=1e-12)
    k = int(out.num_steps)
    assert 3 <= k < 50
    assert np.all(np.isfinite(out.history.value[: k + 1]))
    assert np.all(np.isnan(out.history.value[k + 1 :]))
    assert out.history.value[0] == pytest.approx(float(quartic(x0, args)))
    # the loss decreases monotonically for this convex problem
    assert np.all(np.diff(out.history.value[: k + 1]) <= 0)


def test_loop_max_steps_and_vmap_gives_each_member_its_status():
    args = (1.5, jnp.array([1.0, 2.0]))
    starts = jnp.array([[3.0, -2.0], [jnp.nan, 0.0], [1.0, 2.0]])
    solve = jax.jit(jax.vmap(lambda x0: run(ToyNewton(), (quartic, args), x0, max_steps=30)))
    out = solve(starts)
    assert out.status.tolist() == [Status.GTOL, Status.NONFINITE, Status.GTOL]
    assert out.num_steps.tolist()[1:] == [0, 0]
    capped = run(ToyNewton(), (quartic, args), starts[0], max_steps=1)
    assert int(capped.status) == Status.MAX_STEPS and int(capped.num_steps) == 1


@dataclasses.dataclass(frozen=True)
class LazyToyNewton(ToyNewton):
    """ToyNewton that evaluates its start in the first loop iteration (a flag in the state)."""

    evaluates_start_in_loop = True

    def init(self, problem, x0):
        z = jnp.zeros((), x0.dtype)
        return (x0, z, jnp.zeros_like(x0), z, jnp.asarray(False))

    def step(self, problem, state):
        phi, args = problem
        x, _, _, _, started = state
        evaluated = (x, phi(x, args), jax.grad(phi)(x, args), jnp.zeros((), x.dtype))
        stepped = super().step(problem, evaluated[:4])
        return tuple(jnp.where(started, a, b) for a, b in zip(stepped, evaluated)) + (
            jnp.asarray(True),)

    def terminate(self, problem, state):
        return super().terminate(problem, state[:4])

    def record(self, problem, state):
        return super().record(problem, state[:4])


def test_a_solver_evaluating_its_start_in_the_loop_counts_steps_like_an_eager_one():
    x0 = jnp.array([3.0, -2.0])
    args = (1.5, jnp.array([1.0, 2.0]))
    eager = run(ToyNewton(), (quartic, args), x0, max_steps=50, history=True)
    lazy = run(LazyToyNewton(), (quartic, args), x0, max_steps=50, history=True)
    assert int(lazy.status) == Status.GTOL and int(lazy.num_steps) == int(eager.num_steps)
    np.testing.assert_allclose(lazy.history.value, eager.history.value)
    assert lazy.history.value[0] == pytest.approx(float(quartic(x0, args)))
    capped = run(LazyToyNewton(), (quartic, args), x0, max_steps=0)
    assert int(capped.status) == Status.MAX_STEPS and int(capped.num_steps) == 0
    at_optimum = run(LazyToyNewton(), (quartic, args), args[1], max_steps=0)
    assert int(at_optimum.status) == Status.GTOL and int(at_optimum.num_steps) == 0


def test_verbose_prints_one_row_per_iteration(capsys):
    args = (1.0, jnp.zeros(2))
    out = run(ToyNewton(), (quartic, args), jnp.array([1.0, 1.0]), max_steps=20, verbose=2)
    jax.effects_barrier()
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [ln for ln in lines if ln.split() and ln.split()[0].isdigit()]
    assert len(rows) == int(out.num_steps) + 1
    assert "GTOL" in lines[-1]


def test_implicit_gradient_matches_closed_form():
    # argmin_x a|x-c|^2 + |x-c|^4 is x* = c, so dx*/dc = I and dx*/da = 0.
    def solve(x0, args):
        out = run(ToyNewton(), (quartic, args), x0, max_steps=50)
        return out.state[0], out.status

    solved = with_implicit_gradient(solve, quartic)
    x0 = jnp.array([3.0, -2.0])

    def loss(c, a):
        x, _ = solved(x0, (a, c))
        return jnp.sum(x * jnp.array([2.0, 3.0]))

    gc, ga = jax.grad(loss, argnums=(0, 1))(jnp.array([1.0, 2.0]), 1.5)
    np.testing.assert_allclose(gc, [2.0, 3.0], atol=1e-10)
    assert abs(float(ga)) < 1e-10
    # forward mode through the same rule
    _, tang = jax.jvp(lambda c: solved(x0, (1.5, c))[0], (jnp.array([1.0, 2.0]),),
                      (jnp.array([0.5, -1.0]),))
    np.testing.assert_allclose(tang, [0.5, -1.0], atol=1e-10)


def test_implicit_gradient_of_nontrivial_minimiser_vs_finite_differences():
    # phi(x; t) = sum cosh(x) - t . x has x* = arcsinh(t): dx*/dt = 1/sqrt(1+t^2)
    def phi(x, args):
        (t,) = args
        return jnp.sum(jnp.cosh(x)) - jnp.dot(t, x)

    def solve(x0, args):
        out = run(ToyNewton(), (phi, args), x0, max_steps=60)
        return out.state[0], out.num_steps

    solved = with_implicit_gradient(solve, phi)
    t = jnp.array([0.3, -1.2, 2.0])
    jac = jax.jacrev(lambda t: solved(jnp.zeros(3), (t,))[0])(t)
    np.testing.assert_allclose(jac, np.diag(1 / np.sqrt(1 + np.asarray(t) ** 2)), atol=1e-9)


def test_pinv_symmetric_apply_on_singular_matrix():
    h = jnp.array([[2.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(pinv_symmetric_apply(h, jnp.array([4.0, 7.0])), [2.0, 0.0])


def test_validation_messages_name_the_argument():
    with pytest.raises(ValueError, match=r"x0\['b'\] contains non-finite"):
        as_float_tree({"a": np.ones(1), "b": np.array([1.0, np.nan])})
    with pytest.raises(TypeError, match=r"x0\[0\] must be numeric"):
        as_float_tree(["text"])
    with pytest.raises(ValueError, match="x0 is empty"):
        as_float_tree([])
    with pytest.raises(ValueError, match=r"x0\[1\] is empty"):
        as_float_tree([np.ones(2), np.ones(0)])
    assert as_float_tree([1, 2])[0].dtype == jnp.result_type(float)
    with pytest.raises(ValueError, match="valid names are 'a', 'b'"):
        resolve_solver("c", {"a": object, "b": object}, ToyNewton)
    with pytest.raises(TypeError, match="args must be a tuple"):
        check_args(np.ones(2))


def test_result_message_for_scalar_and_batch():
    r = MinimizeResult(0.0, 0.0, 0.0, True, jnp.array(Status.GTOL), 1, 1, 1, 0)
    assert r.message == Status.GTOL.message and r.status_name == "GTOL"
    rb = r._replace(status=jnp.array([Status.GTOL, Status.MAX_STEPS]))
    assert list(rb.status_name) == ["GTOL", "MAX_STEPS"]
    assert Status.PRECISION_LIMIT.success and not Status.MAX_STEPS.success


def test_verbose_rows_under_vmap_stop_with_each_member(capsys):
    """Under vmap the loop body also runs for members that have stopped; their (discarded)
    rows used to be printed too, one per extra iteration (found by a review)."""
    ys = jnp.array([[1.0, 2.0], [3.0, 5.0]])
    starts = jnp.array([[1.0, 2.0], [-30.0, 40.0]])

    def fit(x0, y):
        return jacopt.least_squares(lambda p, y: jnp.concatenate([p - y, 0.1 * p**3]), x0,
                                    args=(y,), verbose=2)

    result = jax.vmap(fit)(starts, ys)
    jax.effects_barrier()
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.split() and line.split()[0].isdigit()]
    steps = [int(s) for s in result.num_steps]
    assert steps[0] != steps[1]
    assert len(rows) == sum(k + 1 for k in steps)  # iterations 0..k of each member
