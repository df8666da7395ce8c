"""Overlap diagnostics: how much of the log an estimate rests on, and whether to trust it.

Per policy, list length and estimator, on the fold's test events:

- ``matched_events``: events whose logged item the policy could have shown (``pi(a_e | x_e) > 0``);
- ``effective_sample_size``: Kish's ``(sum w)^2 / sum w^2``, the number of equally weighted events the
  estimate is worth;
- ``max_weight`` and ``max_weight_share`` (the largest weight over the sum of weights: one event deciding the
  estimate);
- ``mean_weight`` with its 95% interval (``mean_weight_low``, ``mean_weight_high``): ``sum_e w_e / N``, whose
  expectation is exactly 1 when the log supports every choice of the policy (the standard check of a
  target's support).  Far below 1, the policy's mass sits where the log has events but no match: the weights
  that would balance it were never drawn, IPS is then low and SNIPS extrapolates from the few matches (on
  simulated logs that pass every other check, their intervals then cover the truth in 0-4% of cases).  On a
  slate log the check is made per slot (rows at slot k: ``E[w_ik] = 1``) and the slot farthest from 1 is
  reported; the interval is over contexts (the bootstrap's units);
- ``effective_clicks``: the clicks the estimate rests on, Kish's ``(sum_e c_e r_e)^2 / sum_e c_e^2 r_e`` of the
  weighted clicks (``c_e = w_e``, per slot on a slate log; rewards on their unit scale): with a handful of them a
  few events decide the estimate, and its interval, honest as it is, says little;
- ``unsupported_share``: the policy's probability mass on items the log never shows (train or test rows of the
  fold).  IPS-type estimators give those choices no credit at all, so they are biased low by up to that share.

An estimate is flagged ``reliable = False`` with the reason in ``flag`` when the effective sample size is
below ``min_effective_sample_size``, one weight holds more than ``max_weight_share`` of the total, the mean
weight is significantly (its 95% interval excludes 1) and materially (by more than ``max_mean_weight_gap``)
away from 1, it rests on fewer than ``min_effective_clicks`` effective clicks, or the unsupported share exceeds
``max_unsupported_share``.  Flagged estimates are kept and
shown, marked.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import OffPolicyConfig
from pipeline.offpolicy.estimators import LoggedFeedback
from pipeline.uncertainty import Z_95


def mean_weight(weight: np.ndarray, context: np.ndarray, n_contexts: int, slot: np.ndarray | None = None
                ) -> tuple[float, float, float]:
    """``sum w / N`` and its 95% interval over contexts; with ``slot``, that of the slot farthest from 1."""
    if slot is not None:
        found = [mean_weight(weight[slot == k], context[slot == k], n_contexts) for k in np.unique(slot)]
        return max(found, key=lambda m: abs(m[0] - 1.0)) if found else (np.nan, np.nan, np.nan)
    n = len(weight)
    if n == 0:
        return np.nan, np.nan, np.nan
    mean = float(weight.sum() / n)
    per_context = np.bincount(context, weights=weight, minlength=n_contexts)
    events = np.bincount(context, minlength=n_contexts)
    used = events > 0
    units = int(used.sum())
    if units < 2:
        return mean, np.nan, np.nan
    deviations = (per_context - mean * events)[used]  # the ratio estimator's influence per context
    se = float(np.sqrt(units / (units - 1) * (deviations ** 2).sum()) / n)
    return mean, mean - Z_95 * se, mean + Z_95 * se


def effective_clicks(data: LoggedFeedback) -> float:
    """Kish's effective number of the weighted clicks (module docstring); 0 without a matched click."""
    coefficients = data.weight
    slot = getattr(data, "slot", None)
    if slot is not None:  # a slate estimate averages per slot: a row counts by its slot's share
        coefficients = coefficients / np.bincount(slot, minlength=data.n_slots)[slot]
    unit = np.clip(data.reward_scale.to_unit(data.reward), 0.0, 1.0)
    total, square = float(coefficients @ unit), float(coefficients ** 2 @ unit)
    return total ** 2 / square if square > 0 else 0.0


def overlap(data: LoggedFeedback, unsupported: np.ndarray, config: OffPolicyConfig) -> dict:
    weight = data.weight
    total = float(weight.sum())
    effective = data.effective_sample_size
    largest = float(weight.max()) if len(weight) else 0.0
    share = largest / total if total > 0 else 1.0
    unsupported_share = float(unsupported.mean()) if len(unsupported) else 0.0
    average, low, high = mean_weight(weight, data.context, data.n_contexts, getattr(data, "slot", None))
    problems = []
    if effective < config.min_effective_sample_size:
        problems.append(f"effective sample size {effective:.1f} < {config.min_effective_sample_size:g}")
    if share > config.max_weight_share:
        problems.append(f"one event holds {share:.0%} of the weight")
    if np.isfinite(low) and not low <= 1.0 <= high and abs(average - 1.0) > config.max_mean_weight_gap:
        problems.append(f"mean weight {average:.2f} [{low:.2f}, {high:.2f}], not 1: the log does not support where "
                        "the policy's choices go")
    clicks = effective_clicks(data)
    if clicks < config.min_effective_clicks:
        problems.append(f"it rests on {clicks:.1f} effective clicks (< {config.min_effective_clicks:g}): a few events "
                        "decide it")
    if unsupported_share > config.max_unsupported_share:
        problems.append(f"{unsupported_share:.1%} of its choices are items the log never shows")
    return {"matched_events": int((data.target > 0).sum()), "effective_sample_size": effective,
            "max_weight": largest, "max_weight_share": share, "mean_weight": average, "mean_weight_low": low,
            "mean_weight_high": high, "effective_clicks": clicks, "unsupported_share": unsupported_share, "reliable": not problems,
            "flag": "; ".join(problems)}
