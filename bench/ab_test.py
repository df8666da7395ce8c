"""A/A and A/B tests simulated on the session shop (issue 14; ``pipeline/sessions/ab_test.py``).

    python -m bench.ab_test                       # 200 A/A, 40 A/B and 40 power tests (~8 minutes)
    python -m bench.ab_test --aa 400 --ab 0 --power 0
    python -m bench.ab_test --aa 0 --ab 0 --power 100 --power-share 0.1

A/A: the myopic Oracle against itself; the share of tests each rule declares significant is its false-positive
rate (the mSPRT checked daily must stay at alpha, plus Monte Carlo error; the z-test checked daily shows why it
is needed).  A/B: LinGreedy trained for 20,000 steps on the shop (control) against the Oracle (treatment): the
share of tests that reach significance (power), the decision day, and how often each test's 95% interval
contains the true lift (estimated as the mean lift over all the A/B tests).  Power: the control against a
treatment that follows the Oracle on a share of its steps and the control otherwise (``--power-share``,
chosen so that the lift is near the effect the tests are sized for): the share of tests that reach
significance at that lift.  The fixed-horizon test is sized from a pilot run of the control (its outcome
spread).  Results: ``bench/results/ab_test_{aa,ab,power}.csv``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import SessionConfig, SyntheticConfig
from pipeline.data.synthetic import generate
from pipeline.policies import make_policy_spec
from pipeline.sessions.ab_test import ABSettings, offline_lift, plan_fixed_horizon, simulate, summarise
from pipeline.sessions.agents import OracleAgent, PolicyAgent
from pipeline.sessions.environment import shop_session_env


class MixtureAgent:
    """Acts as ``better`` on a share of the steps (drawn from the environment's generator) and as ``base``
    otherwise: a treatment whose lift over ``base`` is a fraction of ``better``'s."""

    def __init__(self, base, better, share: float):
        self.name, self.base, self.better, self.share = f"mixture-{share:g}", base, better, share

    def act(self, observation, env) -> int:
        chosen = self.better if env.unwrapped.np_random.random() < self.share else self.base
        return chosen.act(observation, env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aa", type=int, default=200, help="A/A tests")
    parser.add_argument("--ab", type=int, default=40, help="A/B tests")
    parser.add_argument("--users", type=int, default=400, help="users per test, both arms")
    parser.add_argument("--effect", type=float, default=0.5, help="lift the tests are sized for (clicks per user)")
    parser.add_argument("--power", type=int, default=40, help="tests of the control against the mixture")
    parser.add_argument("--power-share", type=float, default=0.25,
                        help="the mixture's share of Oracle steps (0.25: a lift of 0.58 clicks per user, near the 0.5 "
                             "the tests are sized for; 0.15: 0.30)")
    parser.add_argument("--log-steps", type=int, default=30_000,
                        help="uniformly random steps logged for the offline prediction of each lift")
    parser.add_argument("--seed", type=int, default=0, help="the shop")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    started = time.perf_counter()
    shop = generate(SyntheticConfig(n_events=1_000), args.seed)
    sessions = SessionConfig()
    settings = ABSettings(users=args.users, effect=args.effect)
    oracle = OracleAgent()
    control = PolicyAgent(make_policy_spec("LinGreedy", "LinGreedy", {"epsilon": 0.05}, None, {}), 200, args.seed)
    env = shop_session_env(shop, sessions)
    env.reset(seed=args.seed)
    control.train(env, 20_000)
    planned, pilot = plan_fixed_horizon(shop, sessions, control, settings, seed=1)
    print(f"pilot: outcome sd {pilot['outcome'].std():.3f}; fixed horizon sized at {planned} users per arm")
    args.output.mkdir(parents=True, exist_ok=True)
    report = {"planned_per_arm": planned, "users_per_test": args.users, "effect": args.effect}
    mixture = MixtureAgent(control, oracle, args.power_share)
    for kind, count, arms in (("aa", args.aa, (oracle, oracle)), ("ab", args.ab, (control, oracle)),
                              ("power", args.power, (control, mixture))):
        if count == 0:
            continue
        rows = []
        for test in range(count):
            result = simulate(shop, sessions, *arms, settings, planned,
                              seed={"aa": 0, "ab": 1_000, "power": 2_000}[kind] + test)
            rows.append({key: value for key, value in result.items() if key != "daily"})
        table = pd.DataFrame(rows).assign(kind=kind)
        table.to_csv(args.output / f"ab_test_{kind}.csv", index=False)
        summary = summarise(table).iloc[0]
        report.update({f"{kind}_{key}": round(float(value), 4) for key, value in summary.items() if key != "kind"})
        if kind in ("ab", "power"):
            true_lift = summary["mean_lift"]
            predicted = offline_lift(shop, sessions, *arms, args.log_steps, float(pilot["steps"].mean()), args.seed)
            report.update({f"{kind}_{key}": round(value, 4) for key, value in predicted.items()})
            report[f"{kind}_prediction_interval_contains_true_lift"] = bool(
                predicted["predicted_low"] <= true_lift <= predicted["predicted_high"])
            test_se = (table["lift_high"] - table["lift_low"]) / (2 * 1.959964)
            # a test's lift varies around the true one by its own error too: widen the prediction's by it
            half = 1.959964 * np.sqrt(predicted["predicted_se"] ** 2 + test_se ** 2)
            report[f"{kind}_tests_inside_prediction"] = float(
                (abs(table["lift"] - predicted["predicted_lift"]) <= half).mean())
        print(json.dumps({k: v for k, v in report.items() if k.startswith(kind)}), flush=True)
    report["minutes"] = round((time.perf_counter() - started) / 60, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
