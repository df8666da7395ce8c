"""Slate estimators: logs whose impressions show several items at once, one row per (impression, slot).

A ``position`` column (1 = top slot) makes a log a slate log, as in the Open Bandit Dataset; a ``slate_id``
column groups the rows of one impression.  Notation for impression ``i`` with slots ``k = 1..L``: logged items
``a_ik``, clicks ``r_ik``; the logging policy's probabilities, from the log's columns:

- ``p_ik = mu(a_ik at slot k | x_i)``, the item-position marginal (``propensity``, Open Bandit Pipeline's
  ``pscore_item_position``; the Open Bandit Dataset's ``propensity_score``);
- ``P_i = mu(s_i | x_i)``, the whole slate (``slate_propensity``, OBP's ``pscore``);
- ``C_ik = mu(a_i1..a_ik | x_i)``, its first ``k`` slots (``cascade_propensity``, OBP's ``pscore_cascade``);

and the evaluated policy's, ``pi(a at k | x)``, ``pi(s | x)`` and ``pi(a_1..a_k | x)`` (``slate_target.py``;
the policy's slate is its top-L list).

**Estimand**: the slate's click rate per slot, ``V = (1/L) sum_k E_x E_{s ~ pi(x)} r_k(x, s)``, a rate in
[0, 1] like every other here.  On complete slates (every impression shows all ``L`` slots) it is Open Bandit
Pipeline's slate value divided by ``L``, and IIPS equals OBP's IPW over rows (each row weighted by the
probability at its own slot, averaged over all rows); where slots hold different numbers of rows (a random
subset of rows, as in the Open Bandit Dataset sample) OBP's row average weights each slot by its share of rows,
and the per-slot average here is the unbiased estimate of ``V``.

Every estimator here weights each row by ``w_ik`` and averages per slot, ``V = (1/L) sum_k [sum_{i} w_ik r_ik /
N_k]`` (``N_k``: rows at slot k), or, self-normalised, ``(1/L) sum_k [sum_i w_ik r_ik / sum_i w_ik]``.  The
weights, and what each needs to be unbiased (Open Bandit Pipeline's definitions; Swaminathan et al. 2017):

- **SIPS** (standard): ``w_ik = pi(s_i | x_i) / P_i``; any reward structure; variance grows with the number of
  possible slates (a deterministic policy's slate is matched by about ``1 / P`` of the impressions);
- **IIPS** (independent): ``w_ik = pi(a_ik at k | x_i) / p_ik``; needs the click at slot k to depend only on
  the item there (position-based model); works without ``slate_id``, row by row;
- **RIPS** (reward interaction): ``w_ik = pi(a_i1..a_ik | x_i) / C_ik``; needs the click at slot k to depend only
  on the items at slots 1..k (cascade);
- **PI** (pseudoinverse, Swaminathan et al. 2017): every slot's click weighted by the impression's
  ``W_i = q^T Gamma^+ 1_{s_i}`` (``q``: the policy's slot-item probabilities, ``Gamma = E_mu[1_s 1_s^T]``); needs
  additive slate rewards.  ``Gamma`` needs the logger's pairwise slot probabilities, which a log does not
  carry, so PI is computed for logging that is uniform over the slates without repeated items, ``m`` items
  (``m = 1 / p``); solving ``Gamma v = q`` there gives
  ``W_i = (m-1) sum_k pi(a_ik at k) + (m-1)/(m-L) sum_k pi(a_ik in the list) - (L-1) m/(m-L)`` (may be
  negative; ``(m-1) sum_k pi(a_ik at k) + 2 - L`` when ``L = m``).  It is not computed when the propensities
  vary;
- **SN-SIPS**, **SN-IIPS**, **SN-RIPS**: the self-normalised versions (consistent, not unbiased); their
  intervals reach at least as far as their unnormalised twins' (``slate_estimates``).

Intervals, draws and overlap diagnostics are those of the one-item estimators (``intervals.py``,
``diagnostics.py``), with the bootstrap over test contexts (an impression's rows share one context when they
are grouped by ``slate_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from pipeline.config import OffPolicyConfig
from pipeline.data.dataset import CASCADE_PROPENSITY, CONTEXT_ID, ITEM_ID, RESPONSE, SLATE_PROPENSITY
from pipeline.evaluation import LOGGING
from pipeline.offpolicy.diagnostics import overlap
from pipeline.offpolicy.estimators import Estimator, LoggedFeedback
from pipeline.offpolicy.evaluate import OBSERVED, OFF_POLICY_COLUMNS, off_policy_row
from pipeline.offpolicy.intervals import estimate
from pipeline.uncertainty import Bootstrap

OBSERVED_SLATE = "observed_slate"  # the logging policy's per-slot click rate on its own slates


@dataclass
class LoggedSlates:
    """A fold's logged test rows as the slate estimators need them (arrays in the fold's test-row order)."""

    context: np.ndarray  # per row: position of its context in context_ids (the bootstrap's units)
    context_ids: np.ndarray
    item: np.ndarray  # logged item id per row
    slot: np.ndarray  # 0-based slot per row
    reward: np.ndarray
    propensity: np.ndarray  # p_ik
    n_slots: int
    logged_items: set
    slate: np.ndarray | None = None  # per row: its impression's index (rows grouped by slate_id), else None
    slate_items: np.ndarray | None = None  # (impressions, L): item ids by slot
    slate_propensity: np.ndarray | None = None  # per row: P_i
    cascade_propensity: np.ndarray | None = None  # per row: C_ik

    @property
    def grouped(self) -> bool:
        return self.slate is not None

    @property
    def uniform_logging(self) -> bool:
        """Whether every item-position marginal is the same (uniform logging, as PI's closed form assumes)."""
        return len(self.propensity) == 0 or float(np.ptp(self.propensity)) <= 1e-6 * float(self.propensity.max())

    @classmethod
    def build(cls, test: pd.DataFrame, rows: pd.DataFrame, n_slots: int, logged_items: set) -> "LoggedSlates":
        """``test``: the fold's ``context_id, item_id, response`` test rows; ``rows``: the same rows' ``slot``
        (0-based), ``propensity`` and, where the log has them, ``slate``, ``slate_propensity``,
        ``cascade_propensity``; ``n_slots``: the log's slots per impression."""
        context_ids = pd.unique(test[CONTEXT_ID])
        slot = rows["slot"].to_numpy(dtype=np.int64)
        grouped = "slate" in rows
        slate = slate_items = None
        if grouped:
            slate = pd.factorize(rows["slate"])[0]
            slate_items = np.empty((slate.max() + 1, n_slots), dtype=object)
            slate_items[slate, slot] = test[ITEM_ID].to_numpy()
        optional = {name: rows[name].to_numpy(dtype=float) if name in rows else None
                    for name in (SLATE_PROPENSITY, CASCADE_PROPENSITY)}
        return cls(pd.Index(context_ids).get_indexer(test[CONTEXT_ID]), context_ids,
                   test[ITEM_ID].to_numpy(), slot, test[RESPONSE].to_numpy(dtype=float),
                   rows["propensity"].to_numpy(dtype=float), n_slots, logged_items, slate, slate_items, **optional)


@dataclass
class SlateFeedback(LoggedFeedback):
    """``LoggedFeedback`` with each row's slot: ``target / propensity`` is the estimator's row weight."""

    slot: np.ndarray
    n_slots: int


class SlateEstimator(Estimator):
    """``V = (1/L) sum_k sum_{rows at k} w r / sum_{rows at k} d`` with ``d = 1`` (or ``w``, self-normalised)."""

    weighting: ClassVar[str]  # which probability ratio weights a row: slot | slate | cascade | pseudoinverse

    def columns(self, data: SlateFeedback) -> np.ndarray:
        weight = data.weight
        denominator = weight if self.self_normalised else np.ones(len(weight))
        columns = []
        for k in range(data.n_slots):
            at_k = data.slot == k
            columns += [np.where(at_k, weight * data.reward, 0.0), np.where(at_k, denominator, 0.0)]
        return np.column_stack(columns)

    @staticmethod
    def combine(sums: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (sums[..., 0::2] / sums[..., 1::2]).mean(axis=-1)  # NaN if any slot has nothing to divide by

    def click_coefficients(self, data: SlateFeedback) -> np.ndarray | None:
        """``w_ik / (L d_k)``, ``d_k`` the slot's divisor (its rows, or its weights' sum when self-normalised)."""
        weight = data.weight
        divisor = np.bincount(data.slot, weights=weight if self.self_normalised else None, minlength=data.n_slots)
        if (divisor <= 0).any():
            return None
        return weight / (data.n_slots * divisor[data.slot])


class SIPS(SlateEstimator):
    """Standard slate IPS: ``w_ik = pi(s_i | x_i) / mu(s_i | x_i)``."""

    name, weighting = "SIPS", "slate"


class IIPS(SlateEstimator):
    """Independent IPS: ``w_ik = pi(a_ik at k | x_i) / mu(a_ik at k | x_i)``."""

    name, weighting = "IIPS", "slot"


class RIPS(SlateEstimator):
    """Reward-interaction IPS: ``w_ik = pi(a_i1..a_ik | x_i) / mu(a_i1..a_ik | x_i)``."""

    name, weighting = "RIPS", "cascade"


class PI(SlateEstimator):
    """Pseudoinverse: every slot's row weighted by its impression's ``W_i = q^T Gamma^+ 1_{s_i}``, under logging
    uniform over the slates of ``m`` items without repeats: ``W_i = (m-1) sum_j pi(a_ij at j | x_i) + (m-1)/(m-L)
    sum_j pi(a_ij in the list | x_i) - (L-1) m/(m-L)`` (``pseudoinverse_weights``; the often-quoted
    ``sum_j pi(a_ij at j) / mu(a_ij at j) - (L - 1)`` is exact only for slot-independent logging, and biased here)."""

    name, weighting = "PI", "pseudoinverse"


class SNSIPS(SIPS):
    """Self-normalised SIPS: ``(1/L) sum_k sum_i w_ik r_ik / sum_i w_ik`` with SIPS's weights."""

    name, self_normalised = "SN-SIPS", True


class SNIIPS(IIPS):
    """Self-normalised IIPS: ``(1/L) sum_k sum_i w_ik r_ik / sum_i w_ik`` with IIPS's weights."""

    name, self_normalised = "SN-IIPS", True


class SNRIPS(RIPS):
    """Self-normalised RIPS: ``(1/L) sum_k sum_i w_ik r_ik / sum_i w_ik`` with RIPS's weights."""

    name, self_normalised = "SN-RIPS", True


SLATE_ESTIMATORS: dict[str, type[SlateEstimator]] = {
    cls.name: cls for cls in (IIPS, SNIIPS, SIPS, SNSIPS, RIPS, SNRIPS, PI)}


@dataclass
class SlateTerms:
    """The evaluated policy's probabilities at the logged rows (``slate_target.py``), per row."""

    slot: np.ndarray  # pi(a_ik at k | x_i)
    unsupported: np.ndarray  # pi's probability at slot k on items the log never shows
    listed: np.ndarray  # pi(a_ik anywhere in the list | x_i)
    method: str
    cascade: np.ndarray | None = None  # pi(a_i1..a_ik | x_i)   (grouped logs only)
    slate: np.ndarray | None = None  # pi(s_i | x_i), on each row of the impression


def observed_name(estimator: str) -> str:
    """The logging policy's row that stands in for ``estimator`` (its value on its own log is observed):
    ``observed_slate`` for a slate estimator, ``observed`` for the one-item and top-k estimators."""
    return OBSERVED_SLATE if estimator in SLATE_ESTIMATORS else OBSERVED


def missing_input(estimator: type[SlateEstimator], logged: LoggedSlates) -> str | None:
    """Why ``estimator`` cannot be computed on this log (None when it can)."""
    if estimator.weighting == "slot":
        return None
    if not logged.grouped:
        return "needs the rows of each impression grouped (a slate_id column)"
    if estimator.weighting == "slate" and logged.slate_propensity is None:
        return "needs the logging policy's probability of each whole slate (a slate_propensity column)"
    if estimator.weighting == "cascade" and logged.cascade_propensity is None:
        return "needs the logging policy's probability of each slate's first k items (a cascade_propensity column)"
    if estimator.weighting == "pseudoinverse" and not logged.uniform_logging:
        return ("needs uniform logging (its closed form; the log's item-position propensities vary, and the "
                "general pseudoinverse needs pairwise slot probabilities no log column carries)")
    return None


def has_terms(estimator: type[SlateEstimator], terms: SlateTerms) -> bool:
    """Whether the policy's probabilities include what the estimator weights by (a policy given by its slot
    probabilities alone has no whole-slate or prefix probabilities)."""
    return {"slate": terms.slate, "cascade": terms.cascade}.get(estimator.weighting, terms.slot) is not None


def slate_feedback(estimator: type[SlateEstimator], logged: LoggedSlates, terms: SlateTerms) -> SlateFeedback:
    """The rows with the estimator's weight as ``target / propensity``."""
    if estimator.weighting == "slot":
        target, propensity = terms.slot, logged.propensity
    elif estimator.weighting == "slate":
        target, propensity = terms.slate, logged.slate_propensity
    elif estimator.weighting == "cascade":
        target, propensity = terms.cascade, logged.cascade_propensity
    else:
        target, propensity = pseudoinverse_weights(logged, terms), np.ones(len(logged.slot))
    return SlateFeedback(logged.context, logged.reward, propensity, target, np.zeros(len(target)),
                         np.zeros(len(target)), len(logged.context_ids), logged.slot, logged.n_slots)


def pseudoinverse_weights(logged: LoggedSlates, terms: SlateTerms) -> np.ndarray:
    """Each row's impression weight ``W_i`` of PI under uniform logging over ``m = 1 / p`` items (docstring)."""
    n_items, n_slots = max(int(round(1.0 / float(np.median(logged.propensity)))), logged.n_slots), logged.n_slots
    at_slot = np.bincount(logged.slate, weights=terms.slot)[logged.slate]
    if n_items == n_slots:  # every slate shows every item: only the order carries information
        return (n_items - 1) * at_slot + 2 - n_slots
    listed = np.bincount(logged.slate, weights=terms.listed)[logged.slate]
    return ((n_items - 1) * at_slot + (n_items - 1) / (n_items - n_slots) * listed
            - (n_slots - 1) * n_items / (n_items - n_slots))


def slate_estimates(terms: SlateTerms, logged: LoggedSlates, config: OffPolicyConfig, bootstrap: Bootstrap | None,
                    policy: str, fold: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every slate estimator this log supports, for one policy: rows at ``k = L`` and draws by label."""
    rows, draws, k, unnormalised = [], {}, logged.n_slots, {}
    for estimator in SLATE_ESTIMATORS.values():
        if missing_input(estimator, logged) is not None or not has_terms(estimator, terms):
            continue
        data = slate_feedback(estimator, logged, terms)
        diagnostics = overlap(data, terms.unsupported, config)
        # A self-normalised estimate's interval also covers its unnormalised twin's: with few matched
        # impressions, self-normalising can settle on the wrong value (an epsilon-greedy policy whose greedy slate
        # is never logged gets the value of its uniform part) with a narrow interval on many equal weights.
        twin = unnormalised.get(estimator.weighting) if estimator.self_normalised else None
        result = estimate(estimator(), data, bootstrap, logged.context_ids, f"{policy}/{estimator.name}@{k}", twin)
        if not estimator.self_normalised:
            unnormalised[estimator.weighting] = result
        rows.append(off_policy_row(policy, fold, k, estimator.name, result, diagnostics, "none", terms.method))
        if result.draws is not None:
            draws[f"{estimator.name}@{k}"] = result.draws
    return pd.DataFrame(rows, columns=OFF_POLICY_COLUMNS), draws


def logging_slate_estimate(logged: LoggedSlates, config: OffPolicyConfig, bootstrap: Bootstrap | None, fold: int
                           ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The logging policy's per-slot click rate on its own slates (every weight 1), estimator ``observed_slate``."""
    n, k = len(logged.reward), logged.n_slots
    data = SlateFeedback(logged.context, logged.reward, np.ones(n), np.ones(n), np.zeros(n), np.zeros(n),
                         len(logged.context_ids), logged.slot, k)
    result = estimate(IIPS(), data, bootstrap, logged.context_ids, f"{LOGGING}/{OBSERVED_SLATE}")
    row = off_policy_row(LOGGING, fold, k, OBSERVED_SLATE, result, overlap(data, np.zeros(n), config), "none",
                         "the logged slates")
    return (pd.DataFrame([row], columns=OFF_POLICY_COLUMNS),
            {f"{OBSERVED_SLATE}@{k}": result.draws} if result.draws is not None else {})


def unavailable_estimators(logged: LoggedSlates) -> dict[str, str]:
    """Slate estimators this log cannot support, with the reason (for the run's notes)."""
    return {name: reason for name, cls in SLATE_ESTIMATORS.items() if (reason := missing_input(cls, logged))}

