"""The policy suite (:mod:`jacopt.benchmarks.policy`) in its smallest configuration
(first-order grid and NPG only: no jacopt solver)."""
import numpy as np

from jacopt.problems import policy_problems as pp


def test_policy_suite_records_are_complete():
    from jacopt.benchmarks import _records, policy, runner

    config = policy.Config(problems=("entropy-bandit",), first_order_steps=300, sgd_lrs=(1.0,),
                           adam_lrs=(0.03, 0.3), npg_steps=5, second_order_max_steps=10,
                           lbfgs=False, repeats=1,
                           only={"entropy-bandit": ("pg-adam", "npg")})
    seen = []
    records = _records.run_methods(policy.SUITE, policy._methods(pp.get("entropy-bandit"),
                                                                 config), seen.append)
    assert seen == ["entropy-bandit / pg-adam", "entropy-bandit / npg"]
    adam, npg = records
    for rec in records:
        assert runner.missing_fields(rec) == [] and "error" not in rec
        assert len(rec["curve"]["loss"]) == len(rec["curve"]["iters"]) <= 201
    assert adam["order"] == "first" and len(adam["grid"]) == 2 and adam["lr"] in (0.03, 0.3)
    assert adam["iters_to_target"] is None and adam["final_loss"] > 1e-10
    assert npg["order"] == "second" and npg["iters_to_target"] == 1
    np.testing.assert_allclose(npg["lr"], 1 / 0.3)
    np.testing.assert_allclose(npg["time_to_target_s"], npg["run_s"] / 5)
