"""Off-policy estimates and the decision checked against the truth under non-uniform logging (issue 12).

    python -m bench.decision                          # 20 seeds x 2 softmax-logging shops, default policies
    python -m bench.decision --seeds 5 --set policies.NeuralLinear-cold=null
    python -m bench.decision --shops slates           # 3-slot impressions: the slate estimators (3 shops)

Each (shop setting, seed) is one full pipeline run on the synthetic shop with a softmax logger, with the
decision forced onto the off-policy estimate (``evaluation.decision.metric=off_policy``) so that it is made
as on a user's own logs, while the click model still knows each policy's true value.  Printed and written to
``bench/results/decision_*.csv``:

- coverage: the share of (policy, seed) cases whose 95% interval contains the true value (``true_ctr@k`` on
  the same test events), per estimator, for the first item (k = 1) and the list (k = leaderboard_k), with
  bias and the share of cases flagged unreliable; with ``--shops slates`` also every slate estimator against
  ``true_slate_ctr@3`` (the decision then rests on IIPS);
- decision: per seed, the pick (or none), the truly best policy, the pick's true shortfall and the stated
  minimum detectable difference; the share of seeds whose pick is within it of the best;
- calibration of P(best): (policy, seed) cases binned by their P(best), against the share truly best.

Each run's rows are also written as they come (``<shops>_*_partial.csv``, removed at the end), so a bench
that is stopped keeps what it measured.  Run it on a copy of the config if you edit the config meanwhile.
Results go to ``decision_*.csv`` (``--shops list``) or ``slates_*.csv``.
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
from pipeline.evaluation import TRUE_SLATE_CTR
from pipeline.offpolicy import OBSERVED_SLATE, SLATE_ESTIMATORS
from pipeline.runner import run_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
SOFTMAX_T1 = ["data.synthetic.logging=softmax", "data.synthetic.logging_temperature=1.0"]
SOFTMAX_T2 = ["data.synthetic.logging=softmax", "data.synthetic.logging_temperature=2.0",
              "data.synthetic.logging_noise=0.5"]
SLATES = ["data.synthetic.slate_size=3", "evaluation.leaderboard_k=3"]
SHOPS = {
    "list": {"softmax-T1": SOFTMAX_T1, "softmax-T2": SOFTMAX_T2},  # a sharp production-like logger, a milder one
    "slates": {"slates-softmax-T1": [*SOFTMAX_T1, *SLATES], "slates-softmax-T2": [*SOFTMAX_T2, *SLATES],
               "slates-uniform": ["data.synthetic.logging=uniform", *SLATES]},  # uniform: PI is defined
}


def truth_of(estimator: str) -> str:
    """The true metric an estimate is compared with: the slate value for slate estimators, else true_ctr."""
    return TRUE_SLATE_CTR if estimator in SLATE_ESTIMATORS or estimator == OBSERVED_SLATE else "true_ctr"


def run(config_path: str, seeds: list[int], overrides: list[str], shops: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    estimates, decisions = [], []
    with tempfile.TemporaryDirectory() as output:
        for shop, settings in SHOPS[shops].items():
            for seed in seeds:
                config = load_config(config_path, [*settings, *overrides, f"seed={seed}", f"run.output_dir={output}",
                                                   "evaluation.decision.metric=off_policy"])
                started = time.perf_counter()
                outcome = run_pipeline(config, progress=False)
                truth = (outcome.metrics[outcome.metrics["metric"].isin(["true_ctr", TRUE_SLATE_CTR])]
                         .groupby(["policy", "metric", "k"])["value"].mean().rename("truth").reset_index())
                rows = (outcome.off_policy.assign(metric=outcome.off_policy["estimator"].map(truth_of))
                        .merge(truth, on=["policy", "metric", "k"]).assign(shop=shop, seed=seed))
                estimates.append(rows)
                decision_truth = truth[truth["metric"] == truth_of(outcome.decision["metric"].rpartition("@")[0])]
                decisions.append(_decision_row(outcome.decision, decision_truth, shop, seed))
                _save_partial(estimates, decisions, shops)  # a long bench that stops keeps what it measured
                print(f"{shop} seed {seed}: {time.perf_counter() - started:.1f} s, pick "
                      f"{outcome.decision['policy']}, truly best {decisions[-1]['truly_best']}", flush=True)
    return pd.concat(estimates, ignore_index=True), pd.DataFrame(decisions)


def _prefix(shops: str) -> str:
    return "decision" if shops == "list" else "slates"


def _save_partial(estimates: list, decisions: list, shops: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    prefix = _prefix(shops)
    pd.concat(estimates, ignore_index=True).to_csv(RESULTS / f"{prefix}_estimates_partial.csv", index=False)
    pd.DataFrame(decisions).to_csv(RESULTS / f"{prefix}_picks_partial.csv", index=False)


def _decision_row(decision: dict, truth: pd.DataFrame, shop: str, seed: int) -> dict:
    k = decision["k"]
    candidates = pd.DataFrame(decision.get("policies") or [])
    true_k = truth[truth["k"] == k].set_index("policy")["truth"]
    true_k = true_k[true_k.index.isin(candidates["policy"])] if len(candidates) else true_k
    best = true_k.idxmax()
    pick = decision["policy"]
    row = {"shop": shop, "seed": seed, "pick": pick, "truly_best": best,
           "shortfall": float(true_k.max() - true_k[pick]) if pick else np.nan,
           "mde": decision.get("minimum_detectable_difference")}
    for policy in candidates.itertuples():
        row[f"p_best:{policy.policy}"] = policy.p_best
        row[f"truth:{policy.policy}"] = true_k.get(policy.policy, np.nan)
    return row


def coverage_table(estimates: pd.DataFrame) -> pd.DataFrame:
    cases = estimates[~estimates["estimator"].isin(["observed", OBSERVED_SLATE])].copy()
    cases["covered"] = (cases["low"] <= cases["truth"]) & (cases["truth"] <= cases["high"])
    cases["error"] = cases["value"] - cases["truth"]
    return cases.groupby(["shop", "k", "estimator"]).agg(
        cases=("covered", "size"), coverage=("covered", "mean"), bias=("error", "mean"),
        rmse=("error", lambda e: float(np.sqrt(np.mean(e ** 2)))), mean_width=("high", "mean"),
        unreliable=("reliable", lambda r: float((~r.astype(bool)).mean()))).reset_index().assign(
        mean_width=lambda t: t["mean_width"] - cases.groupby(["shop", "k", "estimator"])["low"].mean().to_numpy())


def calibration_table(decisions: pd.DataFrame) -> pd.DataFrame:
    pairs = []
    for row in decisions.to_dict("records"):
        truths = {key.split(":", 1)[1]: value for key, value in row.items() if key.startswith("truth:")}
        best = max(truths, key=truths.get)
        pairs += [(row[f"p_best:{p}"], p == best) for p in truths]
    frame = pd.DataFrame(pairs, columns=["p_best", "truly_best"])
    bins = [0, 0.05, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0001]
    frame["bin"] = pd.cut(frame["p_best"], bins, right=False)
    return frame.groupby("bin", observed=True).agg(cases=("p_best", "size"), mean_p_best=("p_best", "mean"),
                                                   share_truly_best=("truly_best", "mean")).reset_index()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decision", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--shops", choices=list(SHOPS), default="list",
                        help="list: one item per event (2 shops); slates: 3-slot impressions (3 shops)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    estimates, decisions = run(args.config, list(range(101, 101 + args.seeds)), args.overrides, args.shops)
    coverage, calibration = coverage_table(estimates), calibration_table(decisions)
    RESULTS.mkdir(exist_ok=True)
    prefix = _prefix(args.shops)
    coverage.to_csv(RESULTS / f"{prefix}_coverage.csv", index=False)
    decisions.to_csv(RESULTS / f"{prefix}_picks.csv", index=False)
    calibration.to_csv(RESULTS / f"{prefix}_calibration.csv", index=False)
    for partial in (f"{prefix}_estimates_partial.csv", f"{prefix}_picks_partial.csv"):
        (RESULTS / partial).unlink(missing_ok=True)
    pd.set_option("display.width", 200)
    print("\nCoverage of 95% intervals (true_ctr@k, or true_slate_ctr@3 for slate estimators, same test events):")
    print(coverage.to_string(index=False, float_format="{:.3f}".format))
    decided = decisions[decisions["pick"].notna()]
    within = (decided["shortfall"] <= decided["mde"]).mean() if len(decided) else float("nan")
    print(f"\nDecisions: {len(decided)} of {len(decisions)} seeds decided; pick within the stated minimum detectable "
          f"difference of the truly best in {within:.1%} of decided seeds; truly best picked in "
          f"{(decided['pick'] == decided['truly_best']).mean():.1%}")
    print(decisions[["shop", "seed", "pick", "truly_best", "shortfall", "mde"]].to_string(index=False))
    print("\nCalibration of P(best):")
    print(calibration.to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
