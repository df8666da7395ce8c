"""Which estimator to trust on this log: the smallest estimated mean squared error (``decision.estimator: auto``).

For each estimator the log supports, and each candidate policy (not the logging policy, whose value is
observed), the pooled estimate's mean squared error is estimated as its variance plus its squared bias:

- the variance: ``se^2`` of the pooled estimate (``se`` is half the width of its interval over 1.96, so the
  interval's skew and small-sample widening count too);
- the bias: 0 for the unbiased estimators (IPS, DR; slate: SIPS, and IIPS, RIPS, PI under the click models they
  assume), the delta method's second-order bias for the self-normalised ones, and for Switch-DR the corrections
  it dropped (DR minus Switch-DR, whose expectation is its bias).

The estimator with the smallest mean over the policies is chosen; the decision records the choice, every
estimator's root-mean-squared-error estimate and the rule.  An estimator undefined for some policy (SNIPS with
no matched event) cannot rank that policy and is not a candidate.  Su et al.'s SLOPE (2020) would need the
estimators ordered by bias, which these five are not; the estimated-MSE rule needs no order.
Checked against the truth on simulated shops: ``python -m bench.offpolicy_coverage`` (README).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.offpolicy.estimators import ESTIMATORS
from pipeline.offpolicy.evaluate import LOGGING
from pipeline.offpolicy.slate import SLATE_ESTIMATORS

ASSUMPTIONS = {"IIPS": "the position-based click model", "SN-IIPS": "the position-based click model",
               "RIPS": "the cascade click model", "SN-RIPS": "the cascade click model",
               "PI": "additive slot rewards"}


def choose_estimator(pooled: pd.DataFrame, k: int, names: list[str]) -> dict:
    """``{"estimator", "rule", "estimated_rmse", "reason"}`` for the estimators ``names`` at ``k``, from the rows
    of ``off_policy_pooled`` (``value``, ``se``, ``bias`` per policy, k and estimator)."""
    rows = pooled[(pooled["k"] == k) & pooled["estimator"].isin(names) & (pooled["policy"] != LOGGING)]
    policies = sorted(set(rows["policy"]))
    scores = {}
    for name in names:
        own = rows[rows["estimator"] == name].set_index("policy").reindex(policies)
        if len(own) == 0 or not np.isfinite(own["value"]).all() or not np.isfinite(own["se"]).all():
            continue
        scores[name] = float(np.mean(own["se"] ** 2 + own["bias"].fillna(0.0) ** 2))
    if not scores:
        return {"estimator": None, "rule": "auto", "estimated_rmse": {},
                "reason": f"no estimator among {', '.join(names)} is defined for every policy at k={k}"}
    chosen = min(scores, key=scores.get)
    rmse = {name: float(np.sqrt(score)) for name, score in sorted(scores.items(), key=lambda item: item[1])}
    listed = ", ".join(f"{name} {value:.4f}" for name, value in rmse.items())
    reason = (f"auto: {chosen} has the smallest estimated root mean squared error (variance plus squared bias "
              f"estimate, mean over the {len(policies)} candidate policies at k={k}): {listed}")
    if chosen in ASSUMPTIONS:
        reason += f"; {chosen} is unbiased under {ASSUMPTIONS[chosen]}"
    return {"estimator": chosen, "rule": "auto", "estimated_rmse": rmse, "reason": reason}


def candidate_estimators(pooled: pd.DataFrame, k: int, slate: bool) -> list[str]:
    """The estimators with rows at ``k``: the slate ones on a slate log, else the one-item and top-k ones."""
    present = set(pooled.loc[pooled["k"] == k, "estimator"])
    if slate:
        return [name for name in SLATE_ESTIMATORS if name in present]
    return [name for name in ESTIMATORS if name in present]
