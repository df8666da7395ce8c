"""Off-policy estimators, one class each, in the shape of Open Bandit Pipeline's: formula in the docstring.

Notation, per logged test event ``e`` (``N`` of them): context ``x_e``, logged item ``a_e`` with logging
propensity ``p_e``, reward ``r_e``; the evaluated policy's probability ``pi_e = pi(a_e | x_e)`` (``mu_k`` of
``target.py`` for a top-k list) and weight ``w_e = pi_e / p_e``; the reward model ``r_hat``, its value at the
logged item ``r_hat_e = r_hat(x_e, a_e)`` and the direct-method term ``D_e = sum_a pi(a | x_e) r_hat(x_e, a)``.

Every estimator is written as a function of column sums: ``columns`` gives per-event columns and ``combine``
maps their sums (or weighted sums, for a bootstrap resample) to the estimate.  So one code path gives the
point estimate, the delta-method standard error and the bootstrap draws that paired differences need.
``click_coefficients`` gives the ``c_e`` of its clicks' part ``sum_e c_e r_e`` (for the interval's gamma part).

The estimators are unbiased (IPS, DR) or consistent (SNIPS, SNDR) for the policy's value when every item the
policy may choose had a positive logging propensity; Switch-DR trades a bias for variance on events with
weights above ``tau`` (its interval is widened by the estimated size of that bias, ``dropped``).  Intervals: ``intervals.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from pipeline.rewards import CLICKS, RewardScale


@dataclass
class LoggedFeedback:
    """One policy's view of one fold's logged test events (arrays aligned by event)."""

    context: np.ndarray  # position of the event's context among the fold's test contexts
    reward: np.ndarray
    propensity: np.ndarray
    target: np.ndarray  # pi(a_e | x_e)
    reward_hat: np.ndarray  # r_hat(x_e, a_e)
    direct: np.ndarray  # D_e
    n_contexts: int
    reward_scale: RewardScale = field(default=CLICKS, kw_only=True)  # the range intervals stay in (rewards.py)

    @property
    def weight(self) -> np.ndarray:
        return self.target / self.propensity

    @property
    def effective_sample_size(self) -> float:
        """Kish's ``(sum w)^2 / sum w^2``: the equally weighted events the weights are worth (0 without any)."""
        weight = self.weight
        total = float(weight.sum())
        return total ** 2 / float(weight @ weight) if total > 0 else 0.0


class Estimator:
    """``value = combine(sum_e columns_e)``; subclasses give the formula."""

    name: ClassVar[str]
    uses_reward_model: ClassVar[bool] = False
    self_normalised: ClassVar[bool] = False
    unnormalised: ClassVar[str | None] = None  # a self-normalised estimator's twin, whose interval it covers

    def columns(self, data: LoggedFeedback) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def combine(sums: np.ndarray) -> np.ndarray:
        """Default: the first column's sum over the second's (a mean when the second counts events)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[..., 0] / sums[..., 1]

    def estimate(self, data: LoggedFeedback) -> float:
        return float(self.combine(self.columns(data).sum(axis=0)))

    def weights(self, data: LoggedFeedback) -> np.ndarray:
        """The weight each event's reward gets (``w_e``; Switch-DR: 0 above ``tau``)."""
        return data.weight

    def click_coefficients(self, data: LoggedFeedback) -> np.ndarray | None:
        """``c_e`` with the estimate's rewarded part equal to ``sum_e c_e r_e``: the weights over their
        normaliser (the event count, or the weights' sum when self-normalised)."""
        weights = self.weights(data)
        total = weights.sum() if self.self_normalised else len(weights)
        return weights / total if total > 0 else None

    def dropped(self, data: LoggedFeedback) -> float:
        """An unbiased estimate of the bias the estimator accepts by design (0 for all but Switch-DR)."""
        return 0.0


class IPS(Estimator):
    """Inverse propensity scoring: ``V = (1/N) sum_e w_e r_e``."""

    name = "IPS"

    def columns(self, data: LoggedFeedback) -> np.ndarray:
        return np.column_stack([data.weight * data.reward, np.ones(len(data.reward))])


class SNIPS(Estimator):
    """Self-normalised IPS: ``V = sum_e w_e r_e / sum_e w_e`` (undefined when no weight is positive)."""

    name = "SNIPS"
    self_normalised = True
    unnormalised = "IPS"

    def columns(self, data: LoggedFeedback) -> np.ndarray:
        return np.column_stack([data.weight * data.reward, data.weight])


class DR(Estimator):
    """Doubly robust: ``V = (1/N) sum_e [D_e + w_e (r_e - r_hat_e)]``."""

    name = "DR"
    uses_reward_model = True

    def columns(self, data: LoggedFeedback) -> np.ndarray:
        return np.column_stack([data.direct + data.weight * (data.reward - data.reward_hat), np.ones(len(data.reward))])


class SNDR(Estimator):
    """Self-normalised DR: ``V = (1/N) sum_e D_e + sum_e w_e (r_e - r_hat_e) / sum_e w_e``."""

    name = "SNDR"
    uses_reward_model = True
    self_normalised = True
    unnormalised = "DR"

    def columns(self, data: LoggedFeedback) -> np.ndarray:
        return np.column_stack([data.direct, np.ones(len(data.reward)), data.weight * (data.reward - data.reward_hat),
                                data.weight])

    @staticmethod
    def combine(sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            correction = np.where(sums[..., 3] > 0, sums[..., 2] / np.where(sums[..., 3] > 0, sums[..., 3], 1), 0.0)
            return sums[..., 0] / sums[..., 1] + correction


class SwitchDR(Estimator):
    """Switch-DR (Wang et al. 2017, as Open Bandit Pipeline computes it):
    ``V = (1/N) sum_e [D_e + w_e 1[w_e <= tau] (r_e - r_hat_e)]``: events with weights above ``tau`` keep
    only the model's term."""

    name = "SwitchDR"
    uses_reward_model = True

    def __init__(self, tau: float):
        self.tau = tau

    def weights(self, data: LoggedFeedback) -> np.ndarray:
        return np.where(data.weight <= self.tau, data.weight, 0.0)

    def columns(self, data: LoggedFeedback) -> np.ndarray:
        kept = self.weights(data)
        return np.column_stack([data.direct + kept * (data.reward - data.reward_hat), np.ones(len(data.reward))])

    def dropped(self, data: LoggedFeedback) -> float:
        """The corrections it leaves out, ``(1/N) sum_e w_e 1[w_e > tau] (r_e - r_hat_e)``: DR minus Switch-DR,
        whose expectation is Switch-DR's bias (zero only if ``r_hat`` is right on those events)."""
        weight = data.weight
        return float(np.mean(np.where(weight > self.tau, weight, 0.0) * (data.reward - data.reward_hat)))


ESTIMATORS: dict[str, type[Estimator]] = {cls.name: cls for cls in (IPS, SNIPS, DR, SNDR, SwitchDR)}


def make_estimators(n_items: int, switch_tau_per_item: float) -> list[Estimator]:
    """One instance of every registered estimator (Switch-DR's ``tau`` scales with the catalog)."""
    return [cls(switch_tau_per_item * n_items) if cls is SwitchDR else cls() for cls in ESTIMATORS.values()]
