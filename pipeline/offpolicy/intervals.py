"""The 95% interval of an off-policy estimate, its standard error and its bootstrap draws, for every estimator alike.

An estimator is ``combine(column sums)`` (``estimators.py``); its interval is the union of two intervals:

- **a t-interval on the delta-method standard error** over test contexts (contexts are the independent units;
  the events of one user are not), with a Student-t quantile on Satterthwaite's degrees of freedom
  ``nu = 2 (sum psi^2)^2 / (sum psi^4 - (sum psi^2)^2 / n)`` of the influence values ``psi``: when a few contexts
  carry the estimate (a few matched clicks with large weights) the standard error is itself uncertain, and the
  quantile grows with that uncertainty instead of trusting it;
- **a gamma interval of the weighted clicks** (Fay & Feuer 1997, the interval for directly standardised rates of
  rare events, with Tiwari et al.'s 2006 one-typical-event correction): every estimator's rare-event part is a
  weighted sum of clicks ``Y = sum_e c_e r_e`` (``click_coefficients``; ``c_e = w_e / N`` for IPS and DR,
  ``w_e / sum w`` self-normalised), on the unit scale of the rewards.  With ``v = sum c_e^2 r_e`` and ``c`` the
  expected coefficient of one more click, ``low = v / (2Y) chi2_{2Y^2/v}(2.5%)`` and ``high = (v + c^2) /
  (2 (Y + c)) chi2_{2 (Y + c)^2 / (v + c^2)}(97.5%)``.  It is skewed the way a sum of rare heavy-weighted
  clicks is (the truth lies above a symmetric interval far more often than below: the sample that misses the
  large-weight clicks also shows a small spread), and it stays informative with no matched click at all, where
  the empirical spread is zero: ``high = 3.69 c``, the exact Poisson bound for zero events.  ``c`` comes from
  where the log's clicks fall across the weights (``click_coefficient``): a click as likely on any matched event
  unless the clicks show that large weights click more.  The estimate's interval reaches as far below and above
  its value as this interval does below and above ``Y``.

Why not a fixed floor: a variance floor from a pseudo-count rate (Agresti-Coull) treats every effective sample as
if it held ``z^2 / 2`` extra clicks, which at click rates of a few per thousand dominates the data (20x too
wide on a 0.4% log); the gamma interval adds one click's worth of *weight* only to the upper tail, so it is
exact for rare events and negligible next to many clicks.  The effective number of clicks an estimate rests on is
a diagnostic of its own (``diagnostics.py``).  Checked on simulated shops against the truth
(``python -m bench.offpolicy_coverage``; README "Off-policy estimates").

Then: a self-normalised estimator's interval reaches its unnormalised twin's (SNIPS: IPS's, SNDR: DR's, and the
slate ones): normalising by weights that missed the large ones can settle on a wrong value with a narrow interval
(on the sharp shop, SNDR alone covered 86.5% of its reliable cases, and 97-98% with its twin's); Switch-DR's
interval reaches further by the corrections it dropped (its bias is unknown otherwise); the interval is cut to the reward's range ``[low, high]``, and so is the point estimate (``value``; the uncut one,
unbiased for IPS and DR, is ``raw_value``), so every reported interval contains its estimate.  With no
matched event the interval is the whole range, and the self-normalised estimators are undefined (NaN).

``se`` is half the width of the uncut interval (before Switch-DR's reach) over 1.96: the standard error the
interval stands for.

**Draws** for paired differences: on each of the fold's shared Poisson bootstrap resamples the estimate is
recomputed, and its *rank* among the resamples is kept (the pairing with other policies' draws, which see the
same resampled contexts); the draws are that rank's quantile of the interval (a two-piece normal with median
``value`` and 2.5% and 97.5% points exactly ``low`` and ``high``), ties broken by noise seeded by (run seed,
fold, label).  So the percentile interval of a policy's draws is its reported interval, on one fold and one
seed; averaged over folds and seeds resample by resample, they give the pooled interval every table shows.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaincinv, ndtri, stdtrit

from pipeline.offpolicy.estimators import Estimator, LoggedFeedback
from pipeline.uncertainty import Z_95, Bootstrap

PERCENTILES = (2.5, 97.5)
SLOPE_PRIOR = -1.0  # click_coefficient: clicks spread evenly over the matched events, whatever their weight ...
SLOPE_PRIOR_EVENTS = 10.0  # ... unless the clicks show otherwise, against this many pseudo-observations


@dataclass
class Estimate:
    value: float  # cut to the reward range
    low: float
    high: float
    se: float  # half the width of the uncut interval over 1.96
    draws: np.ndarray | None  # one value per bootstrap resample (None without a bootstrap)
    raw_value: float  # the estimator's value before the cut (unbiased IPS and DR stay unbiased here)
    bias: float = 0.0  # an estimate of the estimator's bias (second-order delta method; Switch-DR: dropped)


def context_sums(columns: np.ndarray, context: np.ndarray, n_contexts: int) -> np.ndarray:
    """Per-context sums of each column, shape (contexts, columns)."""
    return np.column_stack([np.bincount(context, weights=column, minlength=n_contexts) for column in columns.T])


def _gradient(combine, means: np.ndarray) -> np.ndarray:
    gradient = np.empty(len(means))
    for j in range(len(means)):
        step = 1e-6 * max(abs(means[j]), 1e-3)
        up, down = means.copy(), means.copy()
        up[j] += step
        down[j] -= step
        gradient[j] = (combine(up) - combine(down)) / (2 * step)
    return gradient


def influence(sums: np.ndarray, combine) -> np.ndarray:
    """Per-context influence values ``psi_c`` of ``combine(mean of the context sums)`` (a numerical gradient)."""
    means = sums.mean(axis=0)
    return (sums - means) @ _gradient(combine, means)


def delta_method_se(sums: np.ndarray, combine) -> float:
    """Standard error of ``combine(sum over contexts)`` by the delta method."""
    n = len(sums)
    return float(np.sqrt(influence(sums, combine).var(ddof=1) / n)) if n >= 2 else np.nan


def t_quantile(psi: np.ndarray) -> float:
    """The 97.5% Student-t quantile on Satterthwaite's degrees of freedom of the variance of a mean of ``psi``."""
    square = psi ** 2
    total, fourth = float(square.sum()), float((square ** 2).sum())
    spread = fourth - total ** 2 / len(psi)
    dof = 2 * total ** 2 / spread if spread > 0 else np.inf
    return Z_95 if not np.isfinite(dof) else float(stdtrit(max(dof, 1.0), 0.975))


def gamma_interval(total: float, variance: float, mean_coefficient: float) -> tuple[float, float]:
    """95% gamma interval of ``total = sum_e c_e r_e`` for rare events ``r_e`` with coefficients ``c_e`` (module
    docstring): ``variance = sum c_e^2 r_e``, ``mean_coefficient`` the mean ``c`` of the events that could click."""
    low = 0.0 if total <= 0 or variance <= 0 else variance / total * gammaincinv(total ** 2 / variance, 0.025)
    spread = variance + mean_coefficient ** 2
    shape = (total + mean_coefficient) ** 2 / spread
    high = spread / (total + mean_coefficient) * gammaincinv(shape, 0.975)
    return float(low), float(high)  # chi2_k(q) / 2 = gammaincinv(k / 2, q)


def skew_offsets(estimator: Estimator, data: LoggedFeedback) -> tuple[float, float] | None:
    """How far below and above its weighted clicks ``Y`` the gamma interval reaches, in reward units (None when
    the estimator's click coefficients are not all non-negative, as PI's can be)."""
    coefficients = estimator.click_coefficients(data)
    if coefficients is None or (coefficients < 0).any():
        return None
    unit = np.clip(data.reward_scale.to_unit(data.reward), 0.0, 1.0)
    matched = coefficients > 0
    total, variance = float(coefficients @ unit), float(coefficients ** 2 @ unit)
    low, high = gamma_interval(total, variance, click_coefficient(coefficients[matched], unit[matched]))
    return (total - low) * data.reward_scale.width, (high - total) * data.reward_scale.width


def click_coefficient(coefficients: np.ndarray, rewards: np.ndarray) -> float:
    """The expected coefficient of the next click, ``sum c^2 mu / sum c mu``, with ``mu(c)`` where the log's clicks
    fall across the matched events' weights: ``logit mu = a + b log c`` by logistic regression, ``b`` shrunk towards
    -1 (``SLOPE_PRIOR``, a click as likely on any matched event: Tiwari et al.'s mean weight) with the weight of
    ``SLOPE_PRIOR_EVENTS`` pseudo-observations, so a few clicks cannot claim much.  Clicks that concentrate on
    large weights raise it; production loggers favour what clicks, so clicks usually fall on small ones."""
    x = np.log(coefficients)
    x = x - x.mean()
    rate = float(np.clip(rewards.mean(), 1e-6, 1 - 1e-6))
    a, b = np.log(rate / (1 - rate)), SLOPE_PRIOR
    for _ in range(50):  # Newton's method on the penalised log-likelihood (concave: converges from the prior)
        mu = 1 / (1 + np.exp(-np.clip(a + b * x, -30, 30)))
        curvature = mu * (1 - mu)
        gradient = np.array([np.sum(rewards - mu), np.sum((rewards - mu) * x) - SLOPE_PRIOR_EVENTS * (b - SLOPE_PRIOR)])
        hessian = np.array([[curvature.sum(), (curvature * x).sum()],
                            [(curvature * x).sum(), (curvature * x * x).sum() + SLOPE_PRIOR_EVENTS]])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        a, b = a + step[0], b + step[1]
        if np.abs(step).max() < 1e-8:
            break
    mu = 1 / (1 + np.exp(-np.clip(a + b * x, -30, 30)))
    return float((coefficients ** 2 * mu).sum() / (coefficients * mu).sum())


def second_order_bias(sums: np.ndarray, combine) -> float:
    """The delta method's bias of ``combine(mean of context sums)``: ``1/2 sum_jk H_jk Cov(mean_j, mean_k)``
    (zero for estimators linear in the sums, IPS and DR; the ratio bias for the self-normalised ones)."""
    n, p = sums.shape
    if n < 2:
        return 0.0
    means = sums.mean(axis=0)
    covariance = np.cov(sums, rowvar=False).reshape(p, p) / n
    hessian = np.empty((p, p))
    for j in range(p):
        step = 1e-4 * max(abs(means[j]), 1e-3)
        up, down = means.copy(), means.copy()
        up[j] += step
        down[j] -= step
        hessian[j] = (_gradient(combine, up) - _gradient(combine, down)) / (2 * step)
    return float(0.5 * np.sum((hessian + hessian.T) / 2 * covariance))


def estimate(estimator: Estimator, data: LoggedFeedback, bootstrap: Bootstrap | None, context_ids: np.ndarray,
             label: str, cover: Estimate | None = None) -> Estimate:
    """Value, 95% interval, standard error and bootstrap draws of one estimator on one policy's feedback.

    ``label`` names the estimate for its draws' noise; ``cover``: an estimate whose interval this one must
    contain too (a self-normalised estimator covers its unnormalised twin's: SNIPS IPS's, SNDR DR's, SN-IIPS
    IIPS's, ...)."""
    scale = data.reward_scale
    sums = context_sums(estimator.columns(data), data.context, data.n_contexts)
    raw = float(estimator.combine(sums.sum(axis=0)))
    matched = bool((estimator.weights(data) != 0).any())
    if np.isnan(raw) or (estimator.self_normalised and not matched):  # nothing is known
        return Estimate(np.nan, scale.low, scale.high, np.nan, None, np.nan)
    if not matched or len(sums) < 2:  # no event the policy could have chosen: the log says nothing about it
        return _finished(raw, scale.low, scale.high, np.nan, 0.0, sums, estimator, bootstrap, context_ids, label, scale)
    psi = influence(sums, estimator.combine)
    se = float(np.sqrt(psi.var(ddof=1) / len(psi)))
    half = t_quantile(psi) * se
    low, high = raw - half, raw + half
    skew = skew_offsets(estimator, data)
    if skew is not None:
        low, high = min(low, raw - skew[0]), max(high, raw + skew[1])
    if cover is not None and np.isfinite(cover.low):
        low, high = min(low, cover.low), max(high, cover.high)
    standard_error = (high - low) / (2 * Z_95)
    dropped = estimator.dropped(data)  # Switch-DR: the interval reaches as far as the corrections it dropped
    bias = dropped if dropped else second_order_bias(sums, estimator.combine)
    low, high = low + min(dropped, 0.0), high + max(dropped, 0.0)
    low, high = (float(v) for v in scale.clip([low, high]))
    return _finished(raw, low, high, standard_error, bias, sums, estimator, bootstrap, context_ids, label, scale)


def _finished(raw, low, high, se, bias, sums, estimator, bootstrap, context_ids, label, scale) -> Estimate:
    value = float(scale.clip(raw))
    draws = None
    if bootstrap is not None and bootstrap.enabled:
        resampled = estimator.combine(bootstrap.weighted_column_sums(sums, context_ids))
        draws = interval_draws(resampled, value, low, high, noise(bootstrap, label))
    return Estimate(value, low, high, se, draws, raw, bias)


def noise(bootstrap: Bootstrap, label: str) -> np.random.Generator:
    """The random numbers of one estimate's draws: seeded by the run seed, the fold and the label, so draws of
    different folds, seeds or estimates are independent."""
    return np.random.default_rng([*bootstrap.key, zlib.crc32(label.encode())])


def interval_draws(resampled: np.ndarray, value: float, low: float, high: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Draws in the order of ``resampled``'s ranks (ties and undefined resamples in random order) whose median is
    ``value`` and whose ``PERCENTILES`` are exactly ``low`` and ``high`` (module docstring)."""
    n = len(resampled)
    keys = np.where(np.isfinite(resampled), resampled, value)
    ranks = np.empty(n)
    ranks[np.lexsort((rng.random(n), keys))] = np.arange(n)
    quantiles = ndtri((ranks + 0.5) / n)
    draws = value + quantiles * np.where(quantiles < 0, value - low, high - value) / Z_95
    found_low, found_high = np.percentile(draws, PERCENTILES)
    below, above = draws < value, draws > value
    if value > found_low:  # stretch each side so the percentile interval is exactly [low, high]
        draws[below] = value - (value - draws[below]) * (value - low) / (value - found_low)
    if found_high > value:
        draws[above] = value + (draws[above] - value) * (high - value) / (found_high - value)
    return draws
