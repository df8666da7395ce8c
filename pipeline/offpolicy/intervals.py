"""Standard errors, 95% intervals and bootstrap draws of the off-policy estimates, in one place.

For an estimator written as ``combine(column sums)`` (``estimators.py``):

- **empirical standard error**: the delta method over test contexts (contexts are the independent units; the
  events of one user are not);
- **model-based floor**: with 200 items only ~10 of 2,000 events match a deterministic policy's choice, and
  when none of those was clicked the empirical spread is zero and an interval would collapse onto a wrong
  value.  The floor is the per-event variance the logging propensities imply for a click rate ``q`` (the
  Agresti-Coull rate of the self-normalised estimate on its effective sample size), with
  ``u = max(mean_e(sum_a pi(a|x_e)^2 / p_e), mean_e(w_e^2))`` (an estimate of ``E[w^2]``; the first term is
  exact under uniform logging, the second is unbiased under any):
  ``v_IPS = q u - q^2``, ``v_DR = var_e(D_e) + mean_e[u (q (1 - q) + (q - D_e)^2) - (q - D_e)^2]``
  (``v_DR`` also floors SNDR and Switch-DR);
- **interval**: ``value +- 1.96 max(se, sqrt(v / N))`` cut to [0, 1] (a click rate's range; the point estimate
  is not cut, so IPS and DR stay unbiased); for real-valued rewards in ``[low, high]`` the floor's ``q`` and
  ``D_e`` are taken on the unit scale ``(r - low) / (high - low)`` (where the Bernoulli bound holds for any
  bounded reward), the variance scaled back, and the interval cut to ``[low, high]``; SNIPS: a Wilson
  interval on the Kish effective sample size
  ``(sum w)^2 / sum w^2``; Switch-DR's reaches further by the corrections it dropped (``dropped``), since its
  bias is unknown otherwise;
- **draws** for paired differences: the estimate on each of the fold's shared Poisson bootstrap resamples,
  plus independent normal noise where the resamples spread less than the standard error above (the floor),
  so that a policy's draws have its interval's spread while keeping the pairing the resamples carry.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.offpolicy.estimators import Estimator, LoggedFeedback
from pipeline.uncertainty import Z_95, Bootstrap, mean_wilson


WIDEN_BELOW = 0.8  # draws spreading less than this share of the standard error are widened


@dataclass
class Estimate:
    value: float
    low: float
    high: float
    se: float  # the larger of the delta-method and the model-based standard error
    draws: np.ndarray | None  # one value per bootstrap resample (None without a bootstrap)


def context_sums(columns: np.ndarray, context: np.ndarray, n_contexts: int) -> np.ndarray:
    """Per-context sums of each column, shape (contexts, columns)."""
    return np.column_stack([np.bincount(context, weights=column, minlength=n_contexts) for column in columns.T])


def delta_method_se(sums: np.ndarray, combine) -> float:
    """Standard error of ``combine(sum over contexts)`` by the delta method (a numerical gradient)."""
    n = len(sums)
    if n < 2:
        return np.nan
    means = sums.mean(axis=0)
    gradient = np.empty(len(means))
    for j in range(len(means)):
        step = 1e-6 * max(abs(means[j]), 1e-3)
        up, down = means.copy(), means.copy()
        up[j] += step
        down[j] -= step
        gradient[j] = (combine(up) - combine(down)) / (2 * step)
    influence = (sums - means) @ gradient
    return float(np.sqrt(influence.var(ddof=1) / n))


def modelled_variance(data: LoggedFeedback, uses_reward_model: bool) -> float:
    """Per-event variance implied by the logging propensities (the module docstring's ``v_IPS`` / ``v_DR``),
    computed on the unit scale of the rewards and returned on theirs."""
    scale = data.reward_scale
    weight = data.weight
    total = weight.sum()
    effective = data.effective_sample_size
    rate = float(weight @ scale.to_unit(data.reward) / total) if total > 0 else 0.0
    q = (rate * effective + Z_95 ** 2 / 2) / (effective + Z_95 ** 2)
    u = max(float(np.mean(data.square_norm / data.propensity)), float(np.mean(weight ** 2)))
    if not uses_reward_model:
        return (q * u - q ** 2) * scale.width ** 2
    direct = scale.to_unit(data.direct)
    gap = q - direct
    return float(direct.var() + np.mean(u * (q * (1 - q) + gap ** 2) - gap ** 2)) * scale.width ** 2


def estimate(estimator: Estimator, data: LoggedFeedback, bootstrap: Bootstrap | None, context_ids: np.ndarray,
             label: str) -> Estimate:
    """Value, 95% interval, standard error and bootstrap draws of one estimator on one policy's feedback."""
    sums = context_sums(estimator.columns(data), data.context, data.n_contexts)
    value = float(estimator.combine(sums.sum(axis=0)))
    scale = data.reward_scale
    if np.isnan(value):  # e.g. SNIPS with no matched event: nothing is known
        return Estimate(value, scale.low, scale.high, np.nan, None)
    n_events = len(data.reward)
    floor = np.sqrt(max(modelled_variance(data, estimator.uses_reward_model), 0.0) / n_events)
    se = float(np.nanmax([delta_method_se(sums, estimator.combine), floor]))
    if estimator.self_normalised and not estimator.uses_reward_model:  # SNIPS
        effective = data.effective_sample_size
        low, high = mean_wilson(value, effective, scale)
        se = max(se, (high - low) / (2 * Z_95))
    else:
        bias = estimator.dropped(data)  # Switch-DR: the interval reaches as far as the corrections it dropped
        low, high = scale.clip([value - Z_95 * se + min(bias, 0.0), value + Z_95 * se + max(bias, 0.0)]).tolist()
    draws = None
    if bootstrap is not None and bootstrap.enabled:
        resampled = bootstrap.weighted_column_sums(sums, context_ids)
        draws = widen(estimator.combine(resampled), value, se, seed=[bootstrap.seed, zlib.crc32(label.encode())])
    return Estimate(value, float(low), float(high), se, draws)


def widen(draws: np.ndarray, value: float, se: float, seed) -> np.ndarray:
    """Bootstrap draws with the spread ``se`` where theirs is well below it: undefined draws take the value, then
    independent normal noise tops the variance up to ``se^2`` (the draws' pairing with other policies' is kept)."""
    draws = np.where(np.isfinite(draws), draws, value)
    spread = draws.std()
    if spread < WIDEN_BELOW * se:  # not for the ordinary resampling wobble around the delta-method se
        noise = np.random.default_rng(seed).standard_normal(len(draws))
        draws = draws + np.sqrt(se ** 2 - spread ** 2) * noise
    return draws
