"""Which policy to ship: paired comparisons on shared bootstrap resamples, and a verdict the data support.

**Metric** (``evaluation.decision.metric``, ``auto`` by default), always the value of the top-k list at
``k = leaderboard_k``: the true value (``true_ctr@k``) where a click model exists; else the off-policy estimate
of it (the estimator ``evaluation.decision.estimator`` names, or with ``auto`` the one ``offpolicy/selection.py``
finds most accurate on this log), or on a slate log (a ``position`` column) the slate estimate of the click rate
per slot; else replay ``CTR@k``, which is unbiased only under uniform logging and is refused when the
propensities vary.

**Paired differences.** All policies of a fold are resampled with the same Poisson weights over the test
contexts, so ``draw_r(A) - draw_r(B)`` is a draw of their difference; draws are averaged over folds and seeds
resample by resample (``pooling.py``).  For each policy: its value and pooled 95% interval, its differences to the
leader (highest value) and to the baseline with 95% percentile intervals, ``p_best`` (the share of resamples in
which it is the highest) and ``expected_loss`` (the mean over resamples of ``max_j draw_r(j) - draw_r(it)``).
``A`` is *significantly better* than ``B`` when the 2.5% point of ``A - B`` is above 0.

**Verdict** (``verdict`` in ``decision.json``), with a baseline (``evaluation.decision.baseline``, default the
logging policy):

- ``ship``: exactly one policy is significantly better than the baseline and not significantly worse than any
  other (any other with a reliable estimate: a flagged estimate can neither win nor rule a policy out);
- ``tie``: several are; they are indistinguishable, shipping either is fine (``policy`` is the one with the
  highest lower bound, ``tied`` lists them all), and the report says how many logged test events would separate
  the top two;
- ``keep_baseline``: no policy is shown to beat the baseline; the report says how many logged test events it
  would take to detect the smallest interesting lift (``evaluation.decision.min_lift``, relative to the
  baseline's value) over it;
- ``no_decision``, with the reason: fewer than two policies with draws; the only policies shown better than the
  baseline have estimates the overlap diagnostics flag unreliable; or, without a baseline, nothing separates.

Without a baseline a policy must be significantly better than every other to be shipped (``tie`` when several
are not significantly worse than any other, and some are significantly worse).  Estimates flagged unreliable
never make a ``ship`` or a ``tie``, and a leader flagged unreliable is named as such in ``reason``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import EvaluationConfig
from pipeline.evaluation import ORACLE, TRUE_SLATE_CTR
from pipeline.labels import split_label
from pipeline.offpolicy import OBSERVED, observed_name
from pipeline.pooling import PERCENTILES, interval_of_draws
from pipeline.rewards import CLICKS, RewardScale
from pipeline.uncertainty import Z_95

Z_POWER_80 = 0.8416212335729143
POWER_FACTOR = Z_95 + Z_POWER_80  # 5% two-sided at 80% power
VERDICTS = ("ship", "tie", "keep_baseline", "no_decision")


def choose_metric(evaluation: EvaluationConfig, has_truth: bool, has_off_policy: bool, replay_biased: bool,
                  slate_size: int | None = None, slate_estimates: bool = False, estimator: str | None = None
                  ) -> tuple[str | None, str | None, str]:
    """(label, kind, why) of the metric the decision rests on; label None when none is usable.  ``slate_size``:
    the slots per impression of a slate log, whose value in those slots is then the decision's estimand
    (estimated by the slate estimators when ``slate_estimates``); ``estimator``: the off-policy estimator (the
    config's, or the one chosen for ``auto``)."""
    wanted, k = evaluation.decision.metric, evaluation.leaderboard_k
    if wanted in ("auto", "truth") and has_truth and slate_size is not None:
        return f"{TRUE_SLATE_CTR}@{slate_size}", "truth", (
            f"the true clicks per slot of each policy's top-{slate_size} list in the log's {slate_size}-slot "
            f"impressions ({TRUE_SLATE_CTR}@{slate_size}), from the synthetic click model with its position effect")
    if wanted in ("auto", "truth") and has_truth:
        return f"true_ctr@{k}", "truth", (f"the true value of each policy's top-{k} list (true_ctr@{k}), from the "
                                          "synthetic click model")
    if wanted in ("auto", "off_policy") and has_off_policy and slate_estimates:
        name = estimator or evaluation.decision.slate_estimator
        return f"{name}@{slate_size}", "off_policy", (
            f"the {name} estimate of each policy's click rate per slot when its top-{slate_size} list fills the "
            f"log's {slate_size}-slot impressions (a slate log: clicks depend on the slot, so the slate estimators' "
            "value, not the one-item list value, is what the policy would earn there)")
    if wanted in ("auto", "off_policy") and has_off_policy:
        name = estimator or evaluation.decision.estimator
        return f"{name}@{k}", "off_policy", (
            f"the {name} estimate of each policy's top-{k} list value from the logged propensities (unbiased or "
            "consistent under the logging policy where it gives every chosen item a positive propensity)")
    if wanted in ("auto", "replay") and not replay_biased:
        return f"CTR@{k}", "replay", (f"replay CTR@{k} (Mab2Rec/Jurity): unweighted, so unbiased only if the log was "
                                      "collected uniformly at random (no off-policy estimate is available to do better)")
    if wanted == "replay" or (wanted == "auto" and replay_biased):
        return None, None, ("replay metrics are biased here (the logging propensities are not uniform) and no "
                            "off-policy estimate is available")
    source = {"truth": "the data has no ground-truth click model",
              "off_policy": "the log has no propensities (data.files.columns.propensity)"}[wanted]
    return None, None, f"evaluation.decision.metric is {wanted!r} but {source}"


class Comparison:
    """The pooled draws of every candidate (policies x resamples) and the paired comparisons between them."""

    def __init__(self, values: pd.Series, draws: pd.DataFrame, reward: RewardScale):
        self.policies = [p for p in draws.index if p != ORACLE and np.isfinite(values.get(p, np.nan))]
        self.matrix = draws.loc[self.policies].to_numpy(dtype=float)
        self.point = values.reindex(self.policies).to_numpy(dtype=float)
        self.reward = reward

    def index(self, policy: str) -> int:
        return self.policies.index(policy)

    def difference(self, a: int, b: int) -> tuple[float, float, float, float]:
        """Point, interval and standard deviation of the paired difference ``a - b``."""
        draws = self.matrix[a] - self.matrix[b]
        low, high = np.clip(np.percentile(draws, PERCENTILES), -self.reward.width, self.reward.width)
        return float(self.point[a] - self.point[b]), float(low), float(high), float(draws.std())

    def significantly_better(self) -> np.ndarray:
        """``better[a, b]``: the 2.5% point of the paired difference ``a - b`` is above 0."""
        differences = self.matrix[:, None, :] - self.matrix[None, :, :]
        return np.percentile(differences, PERCENTILES[0], axis=2) > 0

    def table(self, leader: int, baseline: int | None, flags: dict[str, str]) -> pd.DataFrame:
        table = pd.DataFrame({"policy": self.policies, "value": self.point})
        table["low"], table["high"] = interval_of_draws(self.matrix, self.point, self.reward)
        for name, reference in (("leader", leader), ("baseline", baseline)):
            if reference is None:
                continue
            cells = [self.difference(i, reference) for i in range(len(self.policies))]
            table[f"diff_to_{name}"], table[f"diff_to_{name}_low"], table[f"diff_to_{name}_high"] = \
                (np.array([cell[j] for cell in cells]) for j in range(3))
        best = self.matrix.max(axis=0)
        is_best = self.matrix == best
        table["p_best"] = (is_best / is_best.sum(axis=0)).mean(axis=1)  # ties share the win
        table["expected_loss"] = (best - self.matrix).mean(axis=1)
        better = self.significantly_better()
        trusted = np.array([not flags.get(p) for p in self.policies])  # a flagged estimate beats nothing
        table["not_worse_than_any"] = ~better[trusted].any(axis=0)
        if baseline is not None:
            table["better_than_baseline"] = better[:, baseline]
        table["reliable"] = [not flags.get(p) for p in self.policies]
        table["flag"] = [flags.get(p, "") for p in self.policies]
        return table


def decide(values: pd.Series, draws: pd.DataFrame, label: str, kind: str, metric_reason: str,
           baseline: str | None, n_test_events: int, flags: dict[str, str] | None = None,
           reward: RewardScale = CLICKS, min_lift: float = 0.05) -> tuple[dict, pd.DataFrame]:
    """The decision (for ``decision.json``) and one row per policy (for ``decision.csv``).

    ``values``: each policy's point value of the metric (mean over seeds and folds); ``draws``: the output of
    ``pooling.pooled_draws``; ``flags``: per policy, why the off-policy diagnostics flag its estimate (absent or
    empty: reliable); ``reward``: the range of the mean reward the metric is; ``min_lift``: the smallest lift
    over the baseline worth detecting, relative to its value."""
    flags = flags or {}
    base = {"metric": label, "metric_kind": kind, "metric_reason": metric_reason, "k": split_label(label)[1],
            "baseline": baseline, "n_test_events": int(n_test_events), "min_lift": min_lift}
    comparison = Comparison(values, draws, reward) if len(draws) else None
    if comparison is None or len(comparison.policies) < 2:
        found = comparison.policies if comparison is not None else []
        return {**base, **verdict("no_decision", None,
                                  "fewer than two policies have a value of this metric with bootstrap draws "
                                  "(evaluation.bootstrap_resamples > 0 is needed to compare them)"),
                "policies": [{"policy": p} for p in found]}, pd.DataFrame()
    policies = comparison.policies
    leader = int(np.argmax(comparison.point))
    base_index = policies.index(baseline) if baseline in policies else None
    table = comparison.table(leader, base_index, flags)
    runner_up = int(np.argsort(comparison.point)[-2])
    outcome = _verdict(comparison, table, leader, base_index, flags)
    sizing = _sizing(comparison, table, outcome, leader, runner_up, base_index, n_test_events, min_lift, flags)
    reason = outcome["reason"] + sizing.pop("sentence")
    leader_flag = flags.get(policies[leader])
    if leader_flag and leader_flag not in reason:
        reason += f" The leader {policies[leader]}'s estimate is flagged unreliable ({leader_flag})."
    if baseline is not None and base_index is None:
        reason += f" The baseline {baseline} has no value of {label} here, so nothing is compared with it."
    return {**base, **outcome, "reason": reason, **sizing, "policies": _records(table)}, table


def verdict(kind: str, policy: str | None, reason: str, tied: list[str] | None = None) -> dict:
    headline = {"ship": f"ship {policy}",
                "tie": f"tie: {_names(tied or ['?']).replace(' and ', ' or ')} (indistinguishable; shipping any "
                       "of them is fine)",
                "keep_baseline": f"keep the baseline {policy} (nothing is shown to beat it)",
                "no_decision": "no decision"}[kind]
    return {"verdict": kind, "policy": policy, "tied": tied or [], "headline": headline, "reason": reason}


def _verdict(comparison: Comparison, table: pd.DataFrame, leader: int, baseline: int | None,
             flags: dict[str, str]) -> dict:
    policies = comparison.policies
    not_worse = table["not_worse_than_any"].to_numpy()
    if baseline is not None:
        name = policies[baseline]
        better = table["better_than_baseline"].to_numpy()
        winners = [p for p, ok in zip(policies, better & not_worse) if ok]
        reliable = [p for p in winners if not flags.get(p)]
        described = "significantly better than the baseline {} and not significantly worse than any other".format(name)
        if len(reliable) == 1:
            return verdict("ship", reliable[0], f"{reliable[0]} is {described} ({_versus(table, reliable[0], 'baseline')})")
        if reliable:
            best = _safest(table, reliable)
            return verdict("tie", best, f"{_names(reliable)} are each {described}, and not significantly "
                                        "different from one another", _by_value(table, reliable))
        if winners:
            return verdict("no_decision", None, f"{_names(winners)} would be {described}, but "
                                                f"{'its estimate is' if len(winners) == 1 else 'their estimates are'} "
                                                f"flagged unreliable ({'; '.join(flags[p] for p in winners)})")
        if better.any():
            shown = [p for p, ok in zip(policies, better) if ok]
            return verdict("no_decision", None, f"{_names(shown)} {'beats' if len(shown) == 1 else 'beat'} the "
                                                f"baseline {name} but {'is' if len(shown) == 1 else 'are'} "
                                                "significantly worse than another policy that does not")
        closest = _challenger(table, baseline, flags)
        sentence = f"no policy is significantly better than the baseline {name}"
        if closest is not None:
            sentence += f"; the closest, {policies[closest]}, differs by {_versus(table, policies[closest], 'baseline')}"
        return verdict("keep_baseline", name, sentence)
    top = [p for p, ok in zip(policies, not_worse) if ok]
    if len(top) == len(policies):
        return verdict("no_decision", None, f"no policy is significantly different from the leader "
                                            f"{policies[leader]} (all {len(policies)} paired 95% intervals of the "
                                            "difference to it contain 0)")
    reliable = [p for p in top if not flags.get(p)]
    if len(reliable) == 1:
        return verdict("ship", reliable[0], f"{reliable[0]} is significantly better than every other policy")
    if reliable:
        return verdict("tie", _safest(table, reliable), f"{_names(reliable)} are each significantly better than "
                                                        "the rest and indistinguishable from one another",
                       _by_value(table, reliable))
    return verdict("no_decision", None, f"the policies not shown worse than another ({_names(top)}) have "
                                        "estimates flagged unreliable")


def _names(policies: list[str]) -> str:
    """``A``, ``A and B``, ``A, B and C``."""
    return policies[0] if len(policies) == 1 else f"{', '.join(policies[:-1])} and {policies[-1]}"


def _safest(table: pd.DataFrame, policies: list[str]) -> str:
    """Among ``policies``, the one with the highest lower bound."""
    rows = table[table["policy"].isin(policies)]
    return str(rows.loc[rows["low"].idxmax(), "policy"])


def _by_value(table: pd.DataFrame, policies: list[str]) -> list[str]:
    return table[table["policy"].isin(policies)].sort_values("value", ascending=False)["policy"].tolist()


def _versus(table: pd.DataFrame, policy: str, reference: str) -> str:
    row = table.set_index("policy").loc[policy]
    return (f"{row[f'diff_to_{reference}']:+.4f} [{row[f'diff_to_{reference}_low']:+.4f}, "
            f"{row[f'diff_to_{reference}_high']:+.4f}]")


def _challenger(table: pd.DataFrame, baseline: int, flags: dict[str, str]) -> int | None:
    """The best policy other than the baseline by value, preferring reliable estimates."""
    others = table.drop(index=baseline)
    reliable = others[~others["policy"].map(lambda p: bool(flags.get(p)))]
    pool = reliable if len(reliable) else others
    return int(pool["value"].idxmax()) if len(pool) else None


def _sizing(comparison: Comparison, table: pd.DataFrame, outcome: dict, leader: int, runner_up: int,
            baseline: int | None, n_test_events: int, min_lift: float, flags: dict[str, str]) -> dict:
    """How much data the decision would need: the top two's smallest detectable difference and the events (or A/B
    users per arm) that would separate them; for ``keep_baseline``, the events to detect the smallest interesting
    lift over the baseline.  A/B sizes use the Bernoulli variance on the unit scale (exact for clicks, an upper
    bound for other rewards)."""
    reward = comparison.reward
    first, second = leader, runner_up
    if outcome["verdict"] == "tie":
        first, second = (comparison.index(p) for p in outcome["tied"][:2])
    gap, _, _, spread = comparison.difference(first, second)
    mde = POWER_FACTOR * spread
    p1, p2 = np.clip(reward.to_unit(comparison.point[[first, second]]), 0, 1)
    unit_gap = gap / reward.width
    sizing = {"leader": comparison.policies[leader], "runner_up": comparison.policies[runner_up],
              "top_two_difference": float(comparison.point[leader] - comparison.point[runner_up]),
              "top_two_difference_se": spread, "minimum_detectable_difference": mde,
              "events_to_separate_top_two": int(np.ceil(n_test_events * (mde / gap) ** 2)) if gap > 0 else None,
              "ab_users_per_arm_to_separate_top_two":
                  int(np.ceil(POWER_FACTOR ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / unit_gap ** 2)) if gap > 0 else None}
    if outcome["verdict"] == "tie":
        events = sizing["events_to_separate_top_two"]
        sizing["sentence"] = (f"; about {events:,} logged test events would separate {outcome['tied'][0]} from "
                              f"{outcome['tied'][1]} (they differ by {gap:.4f}; the smallest detectable difference at "
                              f"{n_test_events:,} test events is {mde:.4f})." if events else
                              f"; they have the same value ({gap:.4f}).")
    elif outcome["verdict"] == "keep_baseline" and baseline is not None:
        challenger = _challenger(table, baseline, flags)
        lift = min_lift * abs(comparison.point[baseline])
        spread = comparison.difference(challenger, baseline)[3] if challenger is not None else np.nan
        events = int(np.ceil(n_test_events * (POWER_FACTOR * spread / lift) ** 2)) if lift > 0 and spread > 0 else None
        sizing.update(smallest_interesting_lift=lift, events_to_detect_lift=events)
        sizing["sentence"] = (f". Detecting a lift of {min_lift:.0%} ({lift:.4f}) over it would take about "
                              f"{events:,} logged test events ({n_test_events:,} here)." if events else ".")
    elif outcome["verdict"] == "no_decision" and gap > 0:
        events = sizing["events_to_separate_top_two"]
        sizing["sentence"] = (f". At {n_test_events:,} test events the smallest detectable difference is {mde:.4f}; "
                              f"the top two differ by {gap:.4f}, which would take about {events:,} logged test events, "
                              f"or an A/B test with {sizing['ab_users_per_arm_to_separate_top_two']:,} users per arm.")
    else:
        sizing["sentence"] = "."
    return sizing


def _records(table: pd.DataFrame) -> list[dict]:
    return [{key: (None if isinstance(value, float) and not np.isfinite(value) else value)
             for key, value in row.items()} for row in table.to_dict("records")]


def decision_values(label: str, kind: str, metrics: pd.DataFrame, pooled: pd.DataFrame | None
                    ) -> tuple[pd.Series, dict[str, str]]:
    """Each policy's point value of ``label`` (mean over seeds and folds) and, for off-policy, why its estimate is
    flagged (empty: reliable), from ``off_policy_pooled``.

    The logging policy's value is its observed click rate on its own log for off-policy and replay decisions
    (the ``observed`` rows) and its true value for truth decisions (a ``true_ctr`` row)."""
    name, k = split_label(label)
    if kind == "off_policy":
        rows = pooled[(pooled["k"] == k) & (pooled["estimator"].isin([name, observed_name(name)]))]
        flags = {row.policy: (row.flag or "flagged") for row in rows.itertuples() if not row.reliable}
        return rows.set_index("policy")["value"], flags
    values = metrics[(metrics["metric"] == name) & (metrics["k"] == k)].groupby("policy")["value"].mean()
    if kind == "replay" and pooled is not None:
        observed = pooled[(pooled["estimator"] == OBSERVED) & (pooled["k"] == k)]
        values = pd.concat([values, observed.set_index("policy")["value"]])
    return values, {}
