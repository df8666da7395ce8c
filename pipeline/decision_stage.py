"""The run's last stage: pool every estimate over seeds and folds, choose the decision's estimator, decide.

Writes ``draws.parquet``, ``off_policy_pooled.csv`` (one interval per quantity, ``pooling.py``),
``decision.json`` (the verdict, why, the estimator choice) and ``decision.csv`` (one row per policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline import layout
from pipeline.config import PipelineConfig
from pipeline.decision import choose_metric, decide, decision_values, verdict
from pipeline.labels import split_label
from pipeline.offpolicy import OBSERVED_SLATE
from pipeline.offpolicy.selection import candidate_estimators, choose_estimator
from pipeline.pooling import pooled_draws, pooled_off_policy, with_logging_draws
from pipeline.rewards import RewardScale

DRAW_COLUMNS = ["seed", "fold", "policy", "label", "resample", "value"]


@dataclass
class DecisionInputs:
    """What the runner gathered: long draws, the metric and off-policy rows, the data summary and fold sizes."""

    draws: list[pd.DataFrame]
    metrics: pd.DataFrame
    off_policy: pd.DataFrame | None
    data: dict  # Dataset.summary()
    folds: list[dict]
    replay_biased: bool
    notes: list[str]


def decision_stage(run_dir, inputs: DecisionInputs, config: PipelineConfig) -> tuple[dict, pd.DataFrame | None]:
    """Write the pooled estimates and the decision; returns (decision, pooled off-policy estimates or None)."""
    draws = pd.concat(inputs.draws, ignore_index=True) if inputs.draws else pd.DataFrame(columns=DRAW_COLUMNS)
    run_dir.write_table(layout.DRAWS, draws, csv=False)
    reward = RewardScale(**inputs.data["reward"])
    pooled = pooled_off_policy(inputs.off_policy, draws, reward) if inputs.off_policy is not None else None
    if pooled is not None:
        run_dir.write_table(layout.OFF_POLICY_POOLED, pooled)
    evaluation = config.evaluation
    slate_size = inputs.data.get("slate_size")
    slate = pooled is not None and (pooled["estimator"] == OBSERVED_SLATE).any()
    estimator, choice = _estimator(config, pooled, slate, slate_size)
    label, kind, metric_reason = choose_metric(evaluation, "true_ctr" in set(inputs.metrics["metric"]),
                                               pooled is not None, inputs.replay_biased, slate_size, slate, estimator)
    n_test = int(pd.DataFrame(inputs.folds).groupby("seed")["n_test"].sum().mean())
    settings, values = evaluation.decision, None
    if label is None or (kind == "off_policy" and estimator is None):
        why = metric_reason if label is None else choice["reason"]
        decision, table = {"metric": label, "metric_kind": kind, "metric_reason": metric_reason,
                           **verdict("no_decision", None, why), "baseline": settings.baseline,
                           "n_test_events": n_test}, pd.DataFrame()
    else:
        values, flags = decision_values(label, kind, inputs.metrics, pooled)
        decision, table = decide(values, pooled_draws(with_logging_draws(draws, label), label), label, kind,
                                 metric_reason, settings.baseline, n_test, flags, reward, settings.min_lift)
    if kind == "off_policy":
        decision["estimator_choice"] = choice
    if kind == "replay":
        decision["reason"] += " Replay metric: trust it only if the log was collected uniformly at random."
    decision["notes"] = _missing_policies(decision, values, inputs, config, label)
    run_dir.write_json(layout.DECISION_JSON, decision)
    if len(table):
        run_dir.write_table(layout.DECISION, table)
    return decision, pooled


def _estimator(config: PipelineConfig, pooled: pd.DataFrame | None, slate: bool, slate_size: int | None
               ) -> tuple[str | None, dict]:
    """The decision's off-policy estimator (the config's, or the automatic choice) and how it was chosen."""
    settings = config.evaluation.decision
    wanted = settings.slate_estimator if slate else settings.estimator
    if wanted != "auto":
        return wanted, {"estimator": wanted, "rule": "fixed",
                        "reason": f"fixed by evaluation.decision.{'slate_estimator' if slate else 'estimator'}"}
    if pooled is None:
        return None, {"estimator": None, "rule": "auto", "reason": "no off-policy estimates"}
    k = slate_size if slate else config.evaluation.leaderboard_k
    choice = choose_estimator(pooled, k, candidate_estimators(pooled, k, slate))
    return choice["estimator"], choice


def _missing_policies(decision: dict, values: pd.Series | None, inputs: DecisionInputs, config: PipelineConfig,
                      label: str | None) -> list[str]:
    """Notes naming every evaluated policy that is not in the decision, and why: never dropped silently."""
    if label is None or values is None:
        return []
    name, k = split_label(label)
    compared = {row["policy"] for row in decision.get("policies") or []}
    notes = []
    for policy in config.evaluation.external_policies:
        if policy in compared:
            continue
        rows = inputs.off_policy[inputs.off_policy["policy"] == policy] if inputs.off_policy is not None else None
        ks = sorted(set(rows["k"])) if rows is not None and len(rows) else []
        notes.append(f"external policy {policy} is not in the decision: it has no {label} estimate (its file gives "
                     f"estimates at k = {', '.join(map(str, ks)) or 'none'}; the list value at k = {k} needs "
                     f"positions 0 to {k - 1} in evaluation.external_policies.{policy}.file)")
    for policy in sorted(set(values.index) - compared - {"Oracle"}):
        notes.append(f"{policy} is not in the decision: its {label} is undefined or missing in some seed or fold")
    return notes


def leaderboard_estimators(config: PipelineConfig, decision: dict, slate: bool) -> tuple[str, ...]:
    """The off-policy columns of the leaderboard: the decision's estimator (chosen or fixed), then DR and SNIPS,
    and on a slate log a slate estimator too (every estimator is in off_policy.csv)."""
    chosen = (decision.get("estimator_choice") or {}).get("estimator")
    settings = config.evaluation.decision
    fixed = [name for name in ([settings.slate_estimator] if slate else []) + [settings.estimator] if name != "auto"]
    defaults = (["IIPS"] if slate else []) + ["DR", "SNIPS"]
    return tuple(dict.fromkeys([*([chosen] if chosen else []), *fixed, *defaults]))
