"""A/A and A/B tests simulated on the session shop (issue 14; ``pipeline/sessions/ab_test.py``).

    python -m bench.ab_test                       # 200 A/A tests, then 40 A/B tests (~10 minutes)
    python -m bench.ab_test --aa 400 --ab 0

A/A: the myopic Oracle against itself; the share of tests each rule declares significant is its false-positive
rate (the mSPRT checked daily must stay at alpha, plus Monte Carlo error; the z-test checked daily shows why it
is needed).  A/B: LinGreedy trained for 20,000 steps on the shop (control) against the Oracle (treatment): the
share of tests that reach significance (power), the decision day, and how often each test's 95% interval
contains the true lift (estimated as the mean lift over all the A/B tests).  The fixed-horizon test is sized from a
pilot run of the control (its outcome spread).  Results: ``bench/results/ab_test_{aa,ab}.csv``.
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
from pipeline.sessions.ab_test import ABSettings, planned_users_per_arm, simulate, user_outcomes
from pipeline.sessions.agents import OracleAgent, PolicyAgent
from pipeline.sessions.environment import shop_session_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aa", type=int, default=200, help="A/A tests")
    parser.add_argument("--ab", type=int, default=40, help="A/B tests")
    parser.add_argument("--users", type=int, default=400, help="users per test, both arms")
    parser.add_argument("--effect", type=float, default=0.5, help="lift the tests are sized for (clicks per user)")
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
    pilot = user_outcomes(shop, sessions, control, shop.users.sample(args.users, random_state=1), settings, 99_999)
    planned = planned_users_per_arm(float(pilot["outcome"].std()), settings.effect, settings.alpha, settings.power)
    print(f"pilot: outcome sd {pilot['outcome'].std():.3f}; fixed horizon sized at {planned} users per arm")
    args.output.mkdir(parents=True, exist_ok=True)
    report = {"planned_per_arm": planned, "users_per_test": args.users, "effect": args.effect}
    for kind, count, arms in (("aa", args.aa, (oracle, oracle)), ("ab", args.ab, (control, oracle))):
        if count == 0:
            continue
        rows = []
        for test in range(count):
            result = simulate(shop, sessions, *arms, settings, planned, seed=1_000 * (kind == "ab") + test)
            rows.append({key: value for key, value in result.items() if key != "daily"})
        table = pd.DataFrame(rows)
        table.to_csv(args.output / f"ab_test_{kind}.csv", index=False)
        n = len(table)
        for rule in ("sequential_significant", "naive_daily_significant", "fixed_significant"):
            share = table[rule].mean()
            report[f"{kind}_{rule}"] = round(float(share), 4)
            report[f"{kind}_{rule}_mc_error"] = round(float(np.sqrt(max(share * (1 - share), 1e-12) / n)), 4)
        if kind == "ab":
            true_lift = float((table["treatment_mean"] - table["control_mean"]).mean())
            report["ab_true_lift_estimate"] = round(true_lift, 4)
            report["ab_interval_contains_mean_lift"] = float(((table["lift_low"] <= true_lift)
                                                              & (true_lift <= table["lift_high"])).mean())
            report["ab_median_decision_day"] = float(table["decision_day"].median())
            report["ab_median_fixed_day"] = float(table["fixed_day"].median())
        print(json.dumps({k: v for k, v in report.items() if k.startswith(kind)}), flush=True)
    report["minutes"] = round((time.perf_counter() - started) / 60, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
