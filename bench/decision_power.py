"""How often the decision ships a truly better policy, and how often a truly worse one, by log size.

    python -m bench.decision_power                          # 20k, 100k and 500k events x 20 seeds, about 2 hours
    python -m bench.decision_power --events 20000 --seeds 5

Each (size, seed) is a full pipeline run on the softmax-logged shop (the README's production-like logger), with
the Logging baseline and four candidates (Random, LinGreedy, LinUCB and NeuralLinUCB), the decision forced onto
the off-policy estimate (``evaluation.decision.metric=off_policy``, estimator ``auto``) as on a user's logs.
The click model knows each candidate's true value on the test events, and so by how much the truly best
candidate beats (or trails) Logging: the *known margin*, reported per size.

Per size, over the seeds (``bench/results/decision_power.csv``, one row per seed in ``decision_power_seeds.csv``):

- ``ships_better``: the share of seeds whose verdict ships a policy (``ship``, or a ``tie`` whose pick) that truly
  beats Logging; ``ships_worse``: one that is truly worse (the error the rule must keep at 5% or less);
  ``keeps_baseline`` and ``no_decision``;
- the same two shares for an **oracle test that knows the true standard errors**: each candidate whose estimated
  difference to Logging exceeds 1.96 times the true standard error of that difference (its spread over the seeds
  of this size around the true difference) is significantly better; the one with the highest estimate ships.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import load_config
from pipeline.labels import split_label
from pipeline.offpolicy import LOGGING, OBSERVED
from pipeline.runner import run_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (20_000, 100_000, 500_000)
POLICIES = ("policies={Random: {learning_policy: Random}, LinGreedy: {learning_policy: LinGreedy, params: "
            "{epsilon: 0.1}}, LinUCB: {learning_policy: LinUCB}, NeuralLinUCB: {learning_policy: NeuralLinear, "
            "params: {warm_start: bpr, decision: ucb, alpha: 1.0}}}")
SETTINGS = ["data.synthetic.logging=softmax", "evaluation.decision.metric=off_policy", "evaluation.beyond_accuracy=false",
            POLICIES]


def one_run(config_path: str, events: int, seed: int, output: str, overrides: list[str]) -> dict:
    users = max(2000, events // 25)
    config = load_config(config_path, [*SETTINGS, f"data.synthetic.n_events={events}", f"data.synthetic.n_users={users}",
                                       f"seed={seed}", f"run.output_dir={output}", *overrides])
    outcome = run_pipeline(config, progress=False)
    decision = outcome.decision
    k = decision["k"]
    truth = outcome.metrics[(outcome.metrics["metric"] == "true_ctr") & (outcome.metrics["k"] == k)]
    truth = truth.groupby("policy")["value"].mean()
    name, _ = split_label(decision["metric"])
    estimates = outcome.off_policy_pooled
    estimates = estimates[(estimates["k"] == k) & estimates["estimator"].isin([name, OBSERVED])].set_index("policy")
    candidates = [p for p in truth.index if p not in (LOGGING, "Oracle")]
    shipped = decision["policy"] if decision["verdict"] in ("ship", "tie") else None
    row = {"events": events, "seed": seed, "verdict": decision["verdict"], "shipped": shipped, "estimator": name,
           "logging_truth": truth[LOGGING], "margin": float(truth[candidates].max() - truth[LOGGING]),
           "truly_best": truth[candidates].idxmax(), "mde": decision.get("minimum_detectable_difference")}
    for policy in candidates:
        row[f"truth:{policy}"] = truth[policy]
        row[f"estimate_difference:{policy}"] = (estimates.loc[policy, "value"] - estimates.loc[LOGGING, "value"]
                                                if policy in estimates.index else np.nan)
    return row


def summary(seeds: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for events, group in seeds.groupby("events"):
        policies = [c.split(":", 1)[1] for c in group.columns if c.startswith("truth:")]
        better = {p: group[f"truth:{p}"] > group["logging_truth"] for p in policies}
        shipped_better = [bool(better[row.shipped].loc[i]) if row.shipped in better else False
                          for i, row in group.iterrows()]
        shipped_worse = [(not better[row.shipped].loc[i]) if row.shipped in better else False
                         for i, row in group.iterrows()]
        # the oracle test: each difference to Logging against its true standard error across these seeds
        true_se = {p: float((group[f"estimate_difference:{p}"] - (group[f"truth:{p}"] - group["logging_truth"])).std())
                   for p in policies}
        oracle_better = oracle_worse = 0
        for i, row in group.iterrows():
            significant = {p: row[f"estimate_difference:{p}"] for p in policies
                           if row[f"estimate_difference:{p}"] > 1.96 * true_se[p]}
            if significant:
                pick = max(significant, key=significant.get)
                oracle_better += bool(better[pick].loc[i])
                oracle_worse += not bool(better[pick].loc[i])
        n = len(group)
        rows.append({"events": events, "seeds": n, "mean_margin": group["margin"].mean(),
                     "min_margin": group["margin"].min(), "max_margin": group["margin"].max(),
                     "ships_better": np.mean(shipped_better), "ships_worse": np.mean(shipped_worse),
                     "keeps_baseline": (group["verdict"] == "keep_baseline").mean(),
                     "no_decision": (group["verdict"] == "no_decision").mean(),
                     "oracle_ships_better": oracle_better / n, "oracle_ships_worse": oracle_worse / n,
                     "median_mde": group["mde"].median(),
                     "estimators": ", ".join(f"{e} x{c}" for e, c in group["estimator"].value_counts().items())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decision_power", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--events", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=301)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    RESULTS.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as output:
        for events in args.events:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                started = time.perf_counter()
                rows.append(one_run(args.config, events, seed, output, args.overrides))
                pd.DataFrame(rows).to_csv(RESULTS / "decision_power_seeds.csv", index=False)
                print(f"{events:,} events seed {seed}: {time.perf_counter() - started:.0f} s, {rows[-1]['verdict']} "
                      f"{rows[-1]['shipped'] or ''} (truly best {rows[-1]['truly_best']}, margin "
                      f"{rows[-1]['margin']:+.4f})", flush=True)
    table = summary(pd.DataFrame(rows))
    table.to_csv(RESULTS / "decision_power.csv", index=False)
    pd.set_option("display.width", 220)
    print(table.to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
