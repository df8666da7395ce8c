"""The support blind spot: sharp logging, an epsilon-greedy target, and which estimates are marked reliable.

    python -m bench.blind_spot                       # 300 logs of 5,000 events, about 1 minute
    python -m bench.blind_spot --logs 50 --events 2000

Each log is a fresh world: contexts ``x`` (8 features), 200 items with true click probabilities
``r(x, a) = sigmoid(b + x . theta_a + q_a)``, a sharp softmax logger over a noisy view of the true logits,
``p(a | x) = eps / n + (1 - eps) softmax((logit(x, a) + e_a) / T)`` with ``T = 0.5``, ``eps = 0.08`` (the
smallest propensity is ``eps / n = 4e-4``, so weights reach 2,500) and an item error ``e_a ~ N(0, 1.5^2)``, and
an epsilon-greedy target that puts ``0.9`` on the item its own noisy model ranks first and ``0.1`` uniformly.
Where the logger's error buries the target's favourite items, the log has events but no match there: the
weights that would balance those choices are never drawn.

The truth is the target's exact value on the log's contexts, ``mean_x sum_a pi(a | x) r(x, a)``.  Every
estimator (``pipeline/offpolicy``: IPS, SNIPS, DR, SNDR, Switch-DR; the reward model of DR is each item's
shrunk click rate in the log) is computed with the pipeline's intervals and overlap diagnostics.  Printed and
written to ``bench/results/blind_spot.csv``: per estimator, coverage of the truth over all logs, over the logs
the checks *before* the mean-weight check (effective sample size, largest weight share) passed, and over those
every check passes, with how many logs each check flags.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from pipeline.config import OffPolicyConfig
from pipeline.offpolicy import LoggedFeedback
from pipeline.offpolicy.diagnostics import overlap
from pipeline.offpolicy.estimators import make_estimators
from pipeline.offpolicy.intervals import estimate

RESULTS = Path(__file__).resolve().parent / "results"
N_ITEMS, N_FEATURES = 200, 8
TEMPERATURE, UNIFORM_SHARE, LOGGER_NOISE, EPSILON = 0.5, 0.08, 1.5, 0.1


def one_log(events: int, rng: np.random.Generator) -> tuple[LoggedFeedback, float]:
    """A fresh world, its log and the epsilon-greedy target's feedback; returns (feedback, true value)."""
    x = rng.normal(size=(events, N_FEATURES))
    theta = rng.normal(scale=0.5, size=(N_FEATURES, N_ITEMS))
    quality = rng.normal(scale=0.8, size=N_ITEMS)
    logits = -3.0 + x @ theta + quality
    truth = expit(logits)
    scaled = (logits + rng.normal(scale=LOGGER_NOISE, size=N_ITEMS)) / TEMPERATURE
    softmax = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    logger = UNIFORM_SHARE / N_ITEMS + (1 - UNIFORM_SHARE) * softmax / softmax.sum(axis=1, keepdims=True)
    cumulative = logger.cumsum(axis=1)
    shown = np.minimum((cumulative < rng.random(events)[:, None]).sum(axis=1), N_ITEMS - 1)
    rows = np.arange(events)
    clicked = (rng.random(events) < truth[rows, shown]).astype(float)
    favourite = np.argmax(logits + rng.normal(scale=1.0, size=logits.shape), axis=1)  # the target's own model
    target = np.full((events, N_ITEMS), EPSILON / N_ITEMS)
    target[rows, favourite] += 1 - EPSILON
    counts = np.bincount(shown, minlength=N_ITEMS)
    item_rate = (np.bincount(shown, weights=clicked, minlength=N_ITEMS) + 10 * clicked.mean()) / (counts + 10)
    data = LoggedFeedback(context=rows, reward=clicked, propensity=logger[rows, shown], target=target[rows, shown],
                          reward_hat=item_rate[shown], direct=target @ item_rate, n_contexts=events)
    return data, float((target * truth).sum(axis=1).mean())


def run(logs: int, events: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    config, earlier = OffPolicyConfig(), OffPolicyConfig(max_mean_weight_gap=1e9, min_effective_clicks=0)
    rows = []
    for log in range(logs):
        data, truth = one_log(events, rng)
        checks = overlap(data, np.zeros(events), config)
        before = overlap(data, np.zeros(events), earlier)  # ESS and largest-weight share only
        for estimator in make_estimators(N_ITEMS, config.switch_tau_per_item):
            result = estimate(estimator, data, None, np.arange(events), estimator.name)
            rows.append({"log": log, "estimator": estimator.name, "truth": truth, "value": result.value,
                         "low": result.low, "high": result.high, "reliable": checks["reliable"],
                         "reliable_before_mean_weight": before["reliable"], "flag": checks["flag"],
                         "mean_weight": checks["mean_weight"], "effective_sample_size": checks["effective_sample_size"],
                         "effective_clicks": checks["effective_clicks"]})
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    results = results.assign(covered=(results["low"] <= results["truth"]) & (results["truth"] <= results["high"]))
    out = []
    for name, group in results.groupby("estimator", sort=False):
        before, now = group[group["reliable_before_mean_weight"]], group[group["reliable"]]
        out.append({"estimator": name, "logs": len(group), "coverage_all": group["covered"].mean(),
                    "passed_earlier_checks": len(before), "coverage_earlier_checks": before["covered"].mean(),
                    "median_mean_weight_earlier_checks": before["mean_weight"].median(),
                    "reliable_now": len(now), "coverage_reliable_now": now["covered"].mean()})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.blind_spot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=int, default=300)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = run(args.logs, args.events, args.seed)
    table = summary(results)
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "blind_spot.csv", index=False)
    flags = results.drop_duplicates("log")["flag"].str.split("; ").explode()
    kinds = flags[flags != ""].str.extract(r"^(effective sample size|one event|mean weight|it rests on)")[0]
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format="{:.3f}".format))
    print(f"\nlogs flagged by each check (a log can be flagged by several): {kinds.value_counts().to_dict()}")
    print(f"{args.logs} logs of {args.events:,} events in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
