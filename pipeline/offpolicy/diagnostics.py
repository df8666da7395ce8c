"""Overlap diagnostics: how much of the log an estimate rests on, and whether to trust it.

Per policy and list length, on the fold's test events:

- ``matched_events``: events whose logged item the policy could have shown (``pi(a_e | x_e) > 0``);
- ``effective_sample_size``: Kish's ``(sum w)^2 / sum w^2``, the number of equally weighted events the
  estimate is worth;
- ``max_weight`` and ``max_weight_share`` (the largest weight over the sum of weights: one event deciding the
  estimate);
- ``unsupported_share``: the policy's probability mass on items the log never shows (train or test rows of the
  fold).  IPS-type estimators give those choices no credit at all, so they are biased low by up to that share.

An estimate is flagged ``reliable = False`` with the reason in ``flag`` when the effective sample size is
below ``min_effective_sample_size``, one weight holds more than ``max_weight_share`` of the total, or the
unsupported share exceeds ``max_unsupported_share``.  Flagged estimates are kept and shown, marked.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import OffPolicyConfig
from pipeline.offpolicy.estimators import LoggedFeedback


def overlap(data: LoggedFeedback, unsupported: np.ndarray, config: OffPolicyConfig) -> dict:
    weight = data.weight
    total = float(weight.sum())
    effective = data.effective_sample_size
    largest = float(weight.max()) if len(weight) else 0.0
    share = largest / total if total > 0 else 1.0
    unsupported_share = float(unsupported.mean()) if len(unsupported) else 0.0
    problems = []
    if effective < config.min_effective_sample_size:
        problems.append(f"effective sample size {effective:.1f} < {config.min_effective_sample_size:g}")
    if share > config.max_weight_share:
        problems.append(f"one event holds {share:.0%} of the weight")
    if unsupported_share > config.max_unsupported_share:
        problems.append(f"{unsupported_share:.1%} of its choices are items the log never shows")
    return {"matched_events": int((data.target > 0).sum()), "effective_sample_size": effective,
            "max_weight": largest, "max_weight_share": share, "unsupported_share": unsupported_share,
            "reliable": not problems, "flag": "; ".join(problems)}
