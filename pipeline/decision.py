"""Which policy to ship: paired comparisons on shared bootstrap resamples, and a rule that may say "no decision".

**Metric** (``evaluation.decision.metric``, ``auto`` by default), always the value of the top-k list at
``k = leaderboard_k``: the true value (``true_ctr@k``) where a click model exists; else the chosen off-policy
estimate of it (``DR@k`` by default; unbiased under the log's propensities), or on a slate log (a ``position``
column) the slate estimate of the click rate per slot (``IIPS@L`` by default, ``L`` slots); else replay
``CTR@k``, which is unbiased only under uniform logging and is refused when the propensities vary.

**Paired differences.** All policies of a fold are resampled with the same Poisson weights over the test
contexts, so ``draw_r(A) - draw_r(B)`` is a draw of their difference; draws are averaged over folds and
seeds resample by resample (each fold's resamples are independent).  For each policy:

- its difference to the leader (highest value) and to the baseline, with 95% percentile intervals;
- ``p_best``: the share of resamples in which it is the highest;
- ``expected_loss``: the mean over resamples of ``max_j draw_r(j) - draw_r(it)``, what choosing it costs in
  expectation.

**Rule.** Contenders are the policies whose difference to the leader is not significantly below zero; the
pick is the contender with the highest 95% lower bound (the safest of the not-worse).  When every policy is a
contender (nothing separates from anything) there is no decision, and the report says what it would take:
the minimum detectable difference between the top two at this data size (80% power, 5% two-sided), the
logged events needed to separate them at the observed difference, and the users per arm an A/B test would
need for that difference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import EvaluationConfig
from pipeline.evaluation import LOGGING, ORACLE, TRUE_SLATE_CTR
from pipeline.offpolicy import OBSERVED, observed_name
from pipeline.rewards import CLICKS, RewardScale
from pipeline.uncertainty import Z_95

Z_POWER_80 = 0.8416212335729143


def choose_metric(evaluation: EvaluationConfig, has_truth: bool, has_off_policy: bool, replay_biased: bool,
                  slate_size: int | None = None, slate_estimates: bool = False) -> tuple[str | None, str | None, str]:
    """(label, kind, why) of the metric the decision rests on; label None when none is usable.  ``slate_size``:
    the slots per impression of a slate log, whose value in those slots is then the decision's estimand
    (estimated by the slate estimators when ``slate_estimates``)."""
    wanted, k = evaluation.decision.metric, evaluation.leaderboard_k
    estimator = evaluation.decision.estimator
    if wanted in ("auto", "truth") and has_truth and slate_size is not None:
        return f"{TRUE_SLATE_CTR}@{slate_size}", "truth", (
            f"the true clicks per slot of each policy's top-{slate_size} list in the log's {slate_size}-slot "
            f"impressions ({TRUE_SLATE_CTR}@{slate_size}), from the synthetic click model with its position effect")
    if wanted in ("auto", "truth") and has_truth:
        return f"true_ctr@{k}", "truth", (f"the true value of each policy's top-{k} list (true_ctr@{k}), from the "
                                          "synthetic click model")
    if wanted in ("auto", "off_policy") and has_off_policy and slate_estimates:
        name = evaluation.decision.slate_estimator
        return f"{name}@{slate_size}", "off_policy", (
            f"the {name} estimate of each policy's click rate per slot when its top-{slate_size} list fills the "
            f"log's {slate_size}-slot impressions (a slate log: clicks depend on the slot, so the slate estimators' "
            "value, not the one-item list value, is what the policy would earn there)")
    if wanted in ("auto", "off_policy") and has_off_policy:
        return f"{estimator}@{k}", "off_policy", (
            f"the {estimator} estimate of each policy's top-{k} list value from the logged propensities (unbiased "
            "under the logging policy where it gives every chosen item a positive propensity)")
    if wanted in ("auto", "replay") and not replay_biased:
        return f"CTR@{k}", "replay", (f"replay CTR@{k} (Mab2Rec/Jurity): unweighted, so unbiased only if the log was "
                                      "collected uniformly at random (no off-policy estimate is available to do better)")
    if wanted == "replay" or (wanted == "auto" and replay_biased):
        return None, None, ("replay metrics are biased here (the logging propensities are not uniform) and no "
                            "off-policy estimate is available")
    source = {"truth": "the data has no ground-truth click model",
              "off_policy": "the log has no propensities (data.files.columns.propensity)"}[wanted]
    return None, None, f"evaluation.decision.metric is {wanted!r} but {source}"


def with_logging_draws(draws: pd.DataFrame, label: str) -> pd.DataFrame:
    """The draws of ``label``, with the logging policy's observed-rate draws standing in for it where ``label`` is
    an estimate (the logging policy's value on its own log is observed, not estimated)."""
    if label.startswith("true_"):
        return draws[draws["label"] == label]
    name, _, k = label.rpartition("@")
    observed = (draws["policy"] == LOGGING) & (draws["label"] == f"{observed_name(name)}@{k}")
    return pd.concat([draws[(draws["label"] == label) & (draws["policy"] != LOGGING)],
                      draws[observed].assign(label=label)], ignore_index=True)


def pooled_draws(draws: pd.DataFrame, label: str) -> pd.DataFrame:
    """(policies x resamples): each policy's draws of ``label`` averaged over (seed, fold), resample by resample.

    ``draws``: long rows ``seed, fold, policy, label, resample, value``; a policy missing from some (seed, fold)
    is left out (its average would not be comparable)."""
    rows = draws[draws["label"] == label]
    if rows.empty:
        return pd.DataFrame()
    cells = rows.groupby(["seed", "fold"]).ngroups
    per_policy = rows.groupby("policy")[["seed", "fold"]].apply(lambda g: len(g.drop_duplicates()))
    complete = per_policy.index[per_policy == cells]
    rows = rows[rows["policy"].isin(complete)]
    return rows.groupby(["policy", "resample"])["value"].mean().unstack("resample")


def decide(values: pd.Series, draws: pd.DataFrame, label: str, kind: str, metric_reason: str,
           baseline: str | None, n_test_events: int, reliable: pd.Series | None = None,
           reward: RewardScale = CLICKS) -> tuple[dict, pd.DataFrame]:
    """The decision (for ``decision.json``) and one row per policy (for ``decision.csv``).

    ``values``: each policy's point value of the metric (mean over seeds and folds); ``draws``: the output of
    ``pooled_draws``; ``reliable``: per policy, False where the off-policy diagnostics flagged its estimate;
    ``reward``: the range of the mean reward the metric is (0/1 clicks: a click rate in [0, 1])."""
    base = {"metric": label, "metric_kind": kind, "metric_reason": metric_reason, "k": _k_of(label),
            "baseline": baseline, "n_test_events": int(n_test_events)}
    candidates = [p for p in draws.index if p != ORACLE and np.isfinite(values.get(p, np.nan))]
    if len(candidates) < 2:
        return {**base, "policy": candidates[0] if candidates else None,
                "reason": "fewer than two policies have a value of this metric with bootstrap draws "
                          "(evaluation.bootstrap_resamples > 0 is needed to compare them)"}, pd.DataFrame()
    matrix = draws.loc[candidates].to_numpy(dtype=float)
    point = values.reindex(candidates).to_numpy(dtype=float)
    leader = int(np.argmax(point))
    best_per_draw = matrix.max(axis=0)
    is_best = matrix == best_per_draw
    table = pd.DataFrame({"policy": candidates, "value": point})
    # Every decision metric is a mean reward (a click rate for clicks): intervals stay in [low, high], differences
    # in [-(high - low), high - low] (the draws of a sparse off-policy estimate are widened by normal noise and
    # can reach past them).
    table["low"], table["high"] = reward.clip(np.percentile(matrix, [2.5, 97.5], axis=1))
    to_leader = matrix - matrix[leader]
    table["diff_to_leader"] = point - point[leader]
    table["diff_to_leader_low"], table["diff_to_leader_high"] = _difference_interval(to_leader, reward)
    table["p_best"] = (is_best / is_best.sum(axis=0)).mean(axis=1)  # ties share the win
    table["expected_loss"] = (best_per_draw - matrix).mean(axis=1)
    if baseline in candidates:
        to_baseline = matrix - matrix[candidates.index(baseline)]
        table["diff_to_baseline"] = point - point[candidates.index(baseline)]
        table["diff_to_baseline_low"], table["diff_to_baseline_high"] = _difference_interval(to_baseline, reward)
    table["reliable"] = [bool(reliable.get(p, True)) if reliable is not None else True for p in candidates]
    table["contender"] = table["diff_to_leader_high"] >= 0
    table.loc[leader, "contender"] = True

    runner_up = int(np.argsort(point)[-2])
    gap_draws = matrix[leader] - matrix[runner_up]
    se = float(gap_draws.std())
    mde = (Z_95 + Z_POWER_80) * se
    gap = float(point[leader] - point[runner_up])
    power = (Z_95 + Z_POWER_80) ** 2
    # A/B sizing from the Bernoulli variance on the unit scale: exact for clicks, an upper bound for other rewards
    p1, p2 = np.clip(reward.to_unit(point[[leader, runner_up]]), 0, 1)
    unit_gap = gap / reward.width
    sizing = {"leader": candidates[leader], "runner_up": candidates[runner_up], "top_two_difference": gap,
              "top_two_difference_se": se, "minimum_detectable_difference": mde,
              "events_to_separate_top_two": int(np.ceil(n_test_events * (mde / gap) ** 2)) if gap > 0 else None,
              "ab_users_per_arm_to_separate_top_two":
                  int(np.ceil(power * (p1 * (1 - p1) + p2 * (1 - p2)) / unit_gap ** 2)) if gap > 0 else None}

    contenders = table[table["contender"]]
    if len(contenders) == len(table):
        detectable = (f"the smallest difference this run can detect is {mde:.4f}" if mde < reward.width else
                      f"no difference within the metric's range can be detected (the smallest detectable is {mde:.2f})")
        reason = (f"no decision: no policy's {label} is significantly different from the leader "
                  f"{candidates[leader]}'s (all {len(table)} 95% paired intervals of the difference contain 0). "
                  f"At {n_test_events:,} test events {detectable}; the top two differ by {gap:.4f}")
        if sizing["events_to_separate_top_two"]:
            reason += (f", which would take about {sizing['events_to_separate_top_two']:,} logged test events, or an "
                       f"A/B test with {sizing['ab_users_per_arm_to_separate_top_two']:,} users per arm")
        return {**base, "policy": None, "reason": reason + ".", **sizing, "policies": _records(table)}, table
    lower_bounds = pd.Series(np.percentile(matrix, 2.5, axis=1), index=table.index)  # before the cut to the range
    chosen = table.loc[lower_bounds[contenders.index].idxmax()]
    reason = (f"{chosen['policy']}: the highest 95% lower bound ({chosen['low']:.4f}) among the {len(contenders)} "
              f"of {len(table)} policies not significantly worse than the leader {candidates[leader]} on {label}")
    if baseline in candidates and chosen["policy"] != baseline:
        low, high = chosen["diff_to_baseline_low"], chosen["diff_to_baseline_high"]
        verdict = "better than" if low > 0 else "worse than" if high < 0 else "not distinguishable from"
        reason += (f"; {verdict} the baseline {baseline} (difference {chosen['diff_to_baseline']:+.4f} "
                   f"[{low:+.4f}, {high:+.4f}])")
    if not chosen["reliable"]:
        reason += "; its estimate is flagged unreliable by the overlap diagnostics (see off_policy.csv)"
    return {**base, "policy": chosen["policy"], "reason": reason + ".", **sizing, "policies": _records(table)}, table


def _difference_interval(differences: np.ndarray, reward: RewardScale) -> np.ndarray:
    """95% percentile interval of each row of paired differences, cut to [-(high - low), high - low]."""
    return np.clip(np.percentile(differences, [2.5, 97.5], axis=1), -reward.width, reward.width)


def _k_of(label: str) -> int | None:
    tail = label.rpartition("@")[2]
    return int(tail) if tail.isdigit() else None


def _records(table: pd.DataFrame) -> list[dict]:
    return [{key: (None if isinstance(value, float) and not np.isfinite(value) else value)
             for key, value in row.items()} for row in table.to_dict("records")]


def decision_values(label: str, kind: str, metrics: pd.DataFrame, off_policy: pd.DataFrame | None
                    ) -> tuple[pd.Series, pd.Series | None]:
    """Each policy's point value of ``label`` (mean over seeds and folds) and, for off-policy, its reliability.

    The logging policy's value is its observed click rate on its own log for off-policy and replay decisions
    (the ``observed`` rows) and its true value for truth decisions (a ``true_ctr`` row)."""
    name, _, k = label.rpartition("@")
    if kind == "off_policy":
        rows = off_policy[(off_policy["k"] == int(k)) & (off_policy["estimator"].isin([name, observed_name(name)]))]
        return rows.groupby("policy")["value"].mean(), rows.groupby("policy")["reliable"].all()
    values = metrics[(metrics["metric"] == name) & (metrics["k"] == int(k))].groupby("policy")["value"].mean()
    if kind == "replay" and off_policy is not None:
        observed = off_policy[(off_policy["estimator"] == OBSERVED) & (off_policy["k"] == int(k))]
        values = pd.concat([values, observed.groupby("policy")["value"].mean()])
    return values, None

