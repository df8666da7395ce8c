"""Off-policy intervals and the estimator choice, checked against the truth on softmax-logged shops.

    python -m bench.offpolicy_coverage                         # 4 shops x 20 seeds (201-220), about 2 hours
    python -m bench.offpolicy_coverage --shops production --seeds 5
    python -m bench.offpolicy_coverage --shops slates          # 3-slot impressions: the slate estimators

Each (shop, seed) is one full pipeline run on the synthetic shop, the decision forced onto the off-policy
estimate (``evaluation.decision.metric=off_policy``) as on a user's own logs, while the click model still knows
every policy's true value on the same test events.  Shops (``SHOPS``): ``production`` (the README's softmax
logger), ``sharp`` (temperature 0.5: propensities down to 5e-4), ``mild`` (temperature 2) and ``low-ctr`` (a 0.4%
click rate, 200,000 events, five MABWiser policies); ``slates`` runs three 3-slot shops instead.

Printed and written to ``bench/results/offpolicy_coverage.csv`` (``slates_coverage.csv``), per shop, k and
estimator:

- ``coverage``: the share of the cases (policy, seed) *marked reliable* whose 95% interval contains the truth;
  ``coverage_all`` over every case;
- ``width`` (mean over the reliable cases) and ``oracle_width``: ``2 x 1.96 x`` the estimator's true standard error
  per policy, ``sqrt(var_seeds(estimate - truth) + mean(se_truth^2))`` (the second term: the truth is a mean over
  the test contexts, whose own sampling the intervals include), averaged over the same cases; ``width_ratio``;
- bias and RMSE over every case.

And ``offpolicy_choice.csv``: per shop, each fixed estimator's RMSE at the decision's k against the automatic
choice's (``evaluation.decision.estimator: auto``, per seed), its ratio to the best fixed one, and the coverage of
the chosen estimates.  Runs are written as they come (``*_partial.csv``, removed at the end).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import layout
from pipeline.config import load_config
from pipeline.evaluation import TRUE_SLATE_CTR
from pipeline.offpolicy import OBSERVED, OBSERVED_SLATE, SLATE_ESTIMATORS
from pipeline.runner import run_pipeline

RESULTS = Path(__file__).resolve().parent / "results"
SOFTMAX = ["data.synthetic.logging=softmax", "evaluation.beyond_accuracy=false"]
SLATES = ["data.synthetic.slate_size=3", "evaluation.leaderboard_k=3", "data.synthetic.n_events=5000",
          "policies.NeuralLinear-cold=null", "policies.NeuralLinear-warm=null", "policies.NeuralLinUCB=null"]
SHOPS = {
    "list": {
        "production": SOFTMAX,
        "sharp": [*SOFTMAX, "data.synthetic.logging_temperature=0.5"],
        "mild": [*SOFTMAX, "data.synthetic.logging_temperature=2.0", "data.synthetic.logging_noise=0.5"],
        "low-ctr": [*SOFTMAX, "data.synthetic.base_ctr=0.0007", "data.synthetic.n_events=200000",
                    "data.synthetic.n_users=20000",
                    "policies={Random: {learning_policy: Random}, Popularity: {learning_policy: Popularity}, "
                    "LinGreedy: {learning_policy: LinGreedy, params: {epsilon: 0.1}}, LinUCB: {learning_policy: "
                    "LinUCB}, LinTS: {learning_policy: LinTS}}"],
    },
    "slates": {"slates-production": [*SOFTMAX, *SLATES], "slates-mild": [
        *SOFTMAX, *SLATES, "data.synthetic.logging_temperature=2.0", "data.synthetic.logging_noise=0.5"],
               "slates-uniform": ["data.synthetic.logging=uniform", "evaluation.beyond_accuracy=false", *SLATES]},
}
SINGLE_ITEM_ESTIMATORS = ["IPS", "SNIPS", "DR", "SNDR", "SwitchDR"]


def truth_of(estimator: str) -> str:
    """The true metric an estimate is compared with: the slate value for slate estimators, else true_ctr."""
    return TRUE_SLATE_CTR if estimator in SLATE_ESTIMATORS or estimator == OBSERVED_SLATE else "true_ctr"


def one_run(config_path: str, settings: list[str], seed: int, output: str) -> tuple[pd.DataFrame, dict]:
    """The run's off-policy rows with each case's truth and the truth's standard error, and its decision."""
    config = load_config(config_path, [*settings, f"seed={seed}", f"run.output_dir={output}",
                                       "evaluation.decision.metric=off_policy"])
    outcome = run_pipeline(config, progress=False)
    truth = (outcome.metrics[outcome.metrics["metric"].isin(["true_ctr", TRUE_SLATE_CTR])]
             .groupby(["policy", "metric", "k"])["value"].mean().rename("truth").reset_index())
    draws = pd.read_parquet(outcome.path / f"{layout.DRAWS}.parquet")
    draws = draws[draws["label"].str.startswith(("true_ctr@", f"{TRUE_SLATE_CTR}@"))]
    spread = draws.groupby(["policy", "label"])["value"].std().rename("truth_se").reset_index()
    spread[["metric", "k"]] = spread["label"].str.rsplit("@", n=1, expand=True)
    spread["k"] = spread["k"].astype(int)
    rows = (outcome.off_policy.assign(metric=outcome.off_policy["estimator"].map(truth_of))
            .merge(truth, on=["policy", "metric", "k"]).merge(spread.drop(columns="label"), on=["policy", "metric", "k"],
                                                            how="left"))
    return rows, outcome.decision


def run(config_path: str, seeds: list[int], overrides: list[str], shops: list[str], group: str
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    estimates, choices = [], []
    with tempfile.TemporaryDirectory() as output:
        for shop in shops:
            for seed in seeds:
                started = time.perf_counter()
                rows, decision = one_run(config_path, [*SHOPS[group][shop], *overrides], seed, output)
                estimates.append(rows.assign(shop=shop, seed=seed))
                choice = decision.get("estimator_choice") or {}
                choices.append({"shop": shop, "seed": seed, "k": decision.get("k"), "chosen": choice.get("estimator"),
                                "verdict": decision.get("verdict")})
                _save_partial(estimates, choices, group)
                print(f"{shop} seed {seed}: {time.perf_counter() - started:.1f} s, estimator {choice.get('estimator')}, "
                      f"verdict {decision.get('verdict')}", flush=True)
    return pd.concat(estimates, ignore_index=True), pd.DataFrame(choices)


def _prefix(group: str) -> str:
    return "offpolicy" if group == "list" else "slates"


def _save_partial(estimates: list, choices: list, group: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    pd.concat(estimates, ignore_index=True).to_csv(RESULTS / f"{_prefix(group)}_estimates_partial.csv", index=False)
    pd.DataFrame(choices).to_csv(RESULTS / f"{_prefix(group)}_choices_partial.csv", index=False)


def with_errors(estimates: pd.DataFrame) -> pd.DataFrame:
    """The estimated cases (the logging policy's observed rows left out) with error, coverage, width and the true
    standard error of their (shop, policy, k, estimator)."""
    cases = estimates[~estimates["estimator"].isin([OBSERVED, OBSERVED_SLATE]) & estimates["value"].notna()].copy()
    cases["error"] = cases["raw_value"] - cases["truth"]
    cases["covered"] = (cases["low"] <= cases["truth"]) & (cases["truth"] <= cases["high"])
    cases["width"] = cases["high"] - cases["low"]
    keys = ["shop", "policy", "k", "estimator"]
    grouped = cases.groupby(keys)
    true_se = np.sqrt(grouped["error"].var() + grouped["truth_se"].apply(lambda s: float(np.nanmean(s ** 2))))
    return cases.join(true_se.rename("true_se"), on=keys)


def coverage_table(cases: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (shop, k, name), group in cases.groupby(["shop", "k", "estimator"], sort=False):
        reliable = group[group["reliable"].astype(bool)]
        oracle = float((2 * 1.96 * reliable["true_se"]).mean()) if len(reliable) else np.nan
        width = float(reliable["width"].mean()) if len(reliable) else np.nan
        rows.append({"shop": shop, "k": k, "estimator": name, "cases": len(group), "reliable": len(reliable),
                     "coverage": reliable["covered"].mean() if len(reliable) else np.nan,
                     "coverage_all": group["covered"].mean(), "width": width, "oracle_width": oracle,
                     "width_ratio": width / oracle if oracle > 0 else np.nan, "bias": group["error"].mean(),
                     "rmse": float(np.sqrt((group["error"] ** 2).mean()))})
    return pd.DataFrame(rows)


def choice_table(cases: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """Per shop: each fixed estimator's RMSE at the decision's k, and the automatic choice's (seed by seed)."""
    rows = []
    for shop, picks in choices.groupby("shop", sort=False):
        k = int(picks["k"].dropna().iloc[0])
        family = list(SLATE_ESTIMATORS) if shop.startswith("slates") else SINGLE_ITEM_ESTIMATORS
        at_k = cases[(cases["shop"] == shop) & (cases["k"] == k) & cases["estimator"].isin(family)]
        fixed = {name: float(np.sqrt((group["error"] ** 2).mean())) for name, group in at_k.groupby("estimator")}
        chosen = at_k.merge(picks[["seed", "chosen"]], on="seed")
        chosen = chosen[chosen["estimator"] == chosen["chosen"]]
        auto = float(np.sqrt((chosen["error"] ** 2).mean())) if len(chosen) else np.nan
        reliable = chosen[chosen["reliable"].astype(bool)]
        best = min(fixed, key=fixed.get)
        rows.append({"shop": shop, "k": k, **{f"rmse_{name}": value for name, value in fixed.items()},
                     "best_fixed": best, "rmse_auto": auto, "auto_over_best": auto / fixed[best],
                     "auto_coverage": reliable["covered"].mean() if len(reliable) else np.nan,
                     "chosen": ", ".join(f"{n} x{c}" for n, c in picks["chosen"].value_counts().items())})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.offpolicy_coverage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=201)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--shops", nargs="+", default=None,
                        help=f"shops of {list(SHOPS['list'])}, or 'slates' for the three slate shops")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    group = "slates" if args.shops == ["slates"] else "list"
    shops = list(SHOPS[group]) if group == "slates" or args.shops is None else args.shops
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    estimates, choices = run(args.config, seeds, args.overrides, shops, group)
    cases = with_errors(estimates)
    coverage, chosen = coverage_table(cases), choice_table(cases, choices)
    prefix = _prefix(group)
    coverage.to_csv(RESULTS / f"{prefix}_coverage.csv", index=False)
    chosen.to_csv(RESULTS / f"{prefix}_choice.csv", index=False)
    for partial in (f"{prefix}_estimates_partial.csv", f"{prefix}_choices_partial.csv"):
        (RESULTS / partial).unlink(missing_ok=True)
    pd.set_option("display.width", 220)
    print("\nCoverage of 95% intervals among the cases marked reliable, width against the true standard error:")
    print(coverage.to_string(index=False, float_format="{:.3f}".format))
    print("\nThe automatic estimator choice against every fixed one (RMSE at the decision's k):")
    print(chosen.to_string(index=False, float_format="{:.4f}".format))


if __name__ == "__main__":
    main()
