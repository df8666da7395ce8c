"""Report stage: the leaderboard, one row per policy at the chosen k (metrics averaged over folds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.beyond_accuracy import NAMES as BEYOND_ACCURACY
from pipeline.config import METRIC_NAMES
from pipeline.evaluation import ORACLE, TRUE_SLATE_CTR
from pipeline.offpolicy import ESTIMATORS, OBSERVED_SLATE, observed_name


def leaderboard(metrics: pd.DataFrame, k: int, off_policy: pd.DataFrame | None = None,
                decision_metric: str | None = None, estimators: tuple[str, ...] = ("DR", "SNIPS")) -> pd.DataFrame:
    """One row per policy, columns in order of trust; the one implementation the terminal and dashboard share.

    Columns: the decision's metric first, then the truth (``true_ctr@1`` and at ``k``, ``true_hit_rate@k``,
    ``true_regret@1``, ``true_slate_ctr@L`` on a slate log), the off-policy ``estimators`` at ``k``
    (``<estimator>@k``; a slate estimator at the log's L slots; the logging policy's observed rate in each; every
    estimator is in off_policy.csv), the replay metrics at ``k`` (biased unless the log was uniform), and beyond-accuracy.  Values are
    means over seeds and folds.  Rows are sorted by the decision's metric (else ``true_ctr@1``, else replay
    ``CTR@k``); the Oracle row comes last as the reference.
    """
    means = metrics.groupby(["policy", "metric", "k"], sort=False)["value"].mean().reset_index()
    truth = [("true_ctr", 1), ("true_ctr", k), ("true_hit_rate", k), ("true_regret", 1)]
    truth += [(TRUE_SLATE_CTR, int(slots)) for slots in means.loc[means["metric"] == TRUE_SLATE_CTR, "k"].unique()]
    columns = {f"{name}@{at}": _column(means, name, at) for name, at in dict.fromkeys(truth)}
    if off_policy is not None and len(off_policy):
        slates = off_policy[off_policy["estimator"] == OBSERVED_SLATE]
        for name in estimators:  # a slate estimator at the log's slots (the logging policy: its observed rate)
            at = k if name in ESTIMATORS else slates["k"].max()
            rows = off_policy[(off_policy["k"] == at) & off_policy["estimator"].isin([name, observed_name(name)])]
            if len(rows):
                columns[f"{name}@{at}"] = rows.groupby("policy", sort=False)["value"].mean()
    for name in list(METRIC_NAMES) + list(BEYOND_ACCURACY):
        columns[f"{name}@{k}"] = _column(means, name, k)
    columns = {label: values for label, values in columns.items() if len(values)}
    policies = list(dict.fromkeys(list(metrics["policy"]) + (list(off_policy["policy"]) if off_policy is not None
                                                             and len(off_policy) else [])))
    table = pd.DataFrame(columns).reindex(policies)
    order = [decision_metric] if decision_metric in table else []
    table = table[order + [c for c in table.columns if c not in order]]
    sort_by = next((c for c in (decision_metric, "true_ctr@1", f"CTR@{k}") if c in table), None)
    if sort_by is not None:
        ranked = table.drop(index=ORACLE, errors="ignore").sort_values(sort_by, ascending=False)
        table = pd.concat([ranked, table.loc[[ORACLE]]]) if ORACLE in table.index else ranked
    table.index.name = "policy"
    return table


def _column(means: pd.DataFrame, name: str, k: int) -> pd.Series:
    return means[(means["metric"] == name) & (means["k"] == k)].set_index("policy")["value"]


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the mean (NaN bounds below two values, NaN mean for none)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


#: The range of every metric's true value (all of them lie in [0, 1] except novelty, -log2 of a share).
UNBOUNDED_ABOVE = {"novelty"}


def metric_range(metric: str) -> tuple[float, float]:
    return (0.0, np.inf) if metric in UNBOUNDED_ABOVE else (0.0, 1.0)


MIN_VALUES_FOR_T = 3  # a t-interval on two values is wider than the metric's range and says nothing


def seed_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of each (policy, metric, k), with a 95% Student-t interval across seeds.

    Each seed's value is first averaged over its folds, so a seed counts once whatever the split.  The interval
    needs at least three seeds with a value (``interval`` says so otherwise, and the bounds are n/a) and is cut
    to the metric's range (a t-interval on a few values near 1 would reach past it: 0.995 [0.983, 1.007]);
    ``n_undefined_seeds`` counts the seeds where the metric had no value (an AUC without a clicked matched
    event), which the mean and interval leave out.
    """
    per_seed = metrics.groupby(["policy", "metric", "k", "seed"], sort=False)["value"].mean().reset_index()
    rows = []
    for (policy, metric, k), group in per_seed.groupby(["policy", "metric", "k"], sort=False):
        values = group["value"].dropna().to_numpy()
        mean, low, high = t_interval(values)
        floor, ceiling = metric_range(metric)
        if len(values) >= MIN_VALUES_FOR_T:
            low, high, note = np.clip(low, floor, ceiling), np.clip(high, floor, ceiling), "t"
        else:
            low, high, note = np.nan, np.nan, f"none: {len(values)} seed(s) with a value, 3 needed"
        rows.append((policy, metric, k, len(values), len(group) - len(values), mean, low, high, note))
    return pd.DataFrame(rows, columns=["policy", "metric", "k", "n_seeds", "n_undefined_seeds", "mean", "low", "high",
                                       "interval"])


def fold_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per seed, policy, metric and k: how many folds gave a value and how many did not (a mean "over 5 folds"
    can rest on one), next to the mean over the folds that did."""
    grouped = metrics.groupby(["seed", "policy", "metric", "k"], sort=False)["value"]
    return grouped.agg(mean="mean", n_folds="count", n_folds_total="size").reset_index().assign(
        n_undefined_folds=lambda frame: frame["n_folds_total"] - frame["n_folds"]).drop(columns="n_folds_total")


def format_leaderboard(table: pd.DataFrame) -> str:
    """Decision, truth and off-policy columns first; replay, then beyond-accuracy in later blocks (terminal width)."""
    def family(column: str) -> str:
        name = column.split("@")[0]
        return "beyond" if name in BEYOND_ACCURACY else "replay" if name in METRIC_NAMES else "first"

    blocks = [table[[c for c in table.columns if family(c) == part]] for part in ("first", "replay", "beyond")]
    return "\n\n".join(block.to_string(float_format=lambda value: f"{value:.4f}", na_rep="n/a")
                        for block in blocks if block.shape[1])


def format_decision(decision: dict) -> str:
    """The verdict first (ship, tie, keep the baseline, no decision), on which metric, and why."""
    lines = [f"  verdict: {decision.get('headline') or 'no decision'}",
             f"  metric:  {decision.get('metric') or 'none'} - {decision.get('metric_reason', '')}"]
    choice = decision.get("estimator_choice")
    if choice:
        lines.append(f"  estimator: {choice.get('estimator') or 'none'} - {choice.get('reason', '')}")
    lines.append(f"  why:     {decision.get('reason', '')}")
    policies = pd.DataFrame(decision.get("policies") or [])
    if len(policies) and "value" in policies:
        def cell(row, name):
            return f"{row[name]:+.4f} [{row[name + '_low']:+.4f}, {row[name + '_high']:+.4f}]"

        shown = pd.DataFrame({
            "policy": policies["policy"],
            "value [95%]": [f"{r.value:.4f} [{r.low:.4f}, {r.high:.4f}]" for r in policies.itertuples()],
            "vs leader": [cell(row, "diff_to_leader") for _, row in policies.iterrows()],
            "P(best)": policies["p_best"].map("{:.2f}".format),
            "expected loss": policies["expected_loss"].map("{:.4f}".format),
        })
        if "diff_to_baseline" in policies:
            shown[f"vs {decision.get('baseline')}"] = [cell(row, "diff_to_baseline") for _, row in policies.iterrows()]
        if not policies["reliable"].all():
            shown["reliable"] = policies["reliable"].map({True: "yes", False: "NO"})
        shown = shown.iloc[np.argsort(-policies["value"].to_numpy())]
        lines.append("  " + shown.to_string(index=False).replace("\n", "\n  "))
    if decision.get("minimum_detectable_difference") is not None:
        lines.append(f"  smallest detectable difference at {decision['n_test_events']:,} test events: "
                     f"{decision['minimum_detectable_difference']:.4f} (top two differ by "
                     f"{decision['top_two_difference']:.4f})")
    lines += [f"  note: {note}" for note in decision.get("notes") or []]
    return "\n".join(lines)


def format_off_policy(pooled: pd.DataFrame, k: int, estimators: list[str]) -> str:
    """One row per policy and estimator (``estimators`` at ``k``, from ``off_policy_pooled``): the value with its
    pooled 95% interval, the effective sample size and clicks, and the mean weight with its interval ('!': flagged
    unreliable)."""
    rows = pooled[(pooled["k"] == k) & pooled["estimator"].isin(estimators)]
    out = []
    for row in rows.itertuples():
        mark = "" if row.reliable else " !"
        out.append({"policy": row.policy, "estimator": row.estimator,
                    "value [95%]": f"{row.value:.4f} [{row.low:.4f}, {row.high:.4f}]{mark}",
                    "effective events": f"{row.effective_sample_size:.0f}",
                    "effective clicks": f"{row.effective_clicks:.1f}",
                    "mean weight [95%]": f"{row.mean_weight:.2f} [{row.mean_weight_low:.2f}, {row.mean_weight_high:.2f}]"})
    return pd.DataFrame(out).to_string(index=False)
