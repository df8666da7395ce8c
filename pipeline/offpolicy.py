"""Off-policy estimates of each policy's top-1 value from the logging propensities.

For a test context ``c`` the policy shows its first item ``pi(c)``; a logged test event ``e`` of that
context showed ``a_e`` with propensity ``p_e`` and got reward ``r_e``.  With ``m_e = 1[pi(c) = a_e]``,
``w_e = m_e / p_e`` and ``n`` test contexts:

- ``IPS``  (Jurity ``CTR(estimation='ips')``):  ``(1/n) sum_e w_e r_e``
- ``DR``   (Jurity ``CTR(estimation='dr')``):   ``(1/n) sum_c [ r_hat(c, pi(c)) + sum_{e in c} w_e (r_e - r_hat(c, pi(c))) ]``
- ``SNIPS`` (self-normalised IPS, ours):        ``sum_e w_e r_e / sum_e w_e``

``r_hat`` is a reward model fitted on the fold's training rows (``evaluation.off_policy.reward_model``):
``logistic`` (logistic regression on context features plus a one-hot item) or ``item_mean`` (each item's
smoothed training click rate).  Point estimates of IPS and DR are Jurity's.  Intervals (95%):

- SNIPS: a Wilson score interval on the effective sample size ``(sum w)^2 / sum w^2`` (Kish);
- IPS and DR: normal intervals ``mean +- 1.96 sqrt(v / n)``, cut to [0, 1], where the per-context variance ``v`` is the
  larger of the empirical variance of the terms and its model-based value under the logging policy,
  with the click rate ``q`` of the chosen items estimated by the Agresti-Coull rate of the matched events and
  ``u`` the mean inverse propensity of the policy's items, ``max(mean_e(1/p_e), mean_e(w_e^2))``:
  ``v_IPS = q u - q^2`` and
  ``v_DR = var_c(r_hat) + mean_e[u (q (1 - q) + (q - r_hat_e)^2) - (q - r_hat_e)^2]``.

Why not plain empirical or bootstrap intervals: with 200 items and top-1, only about 10 of 2,000 test
events match a policy's choice, and when none of those was clicked the empirical spread is zero, so the
interval collapses onto a wrong value.  The model-based floor keeps the interval honest in that case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from jurity.recommenders import BinaryRecoMetrics
from sklearn.linear_model import LogisticRegression

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID, PROPENSITY, RESPONSE
from pipeline.features import FoldFeatures
from pipeline.uncertainty import Z_95, wilson

ESTIMATORS = ("IPS", "SNIPS", "DR")
OFF_POLICY_COLUMNS = ["policy", "fold", "estimator", "value", "low", "high", "matched_events", "reward_model"]


class RewardModel:
    """``r_hat(context, item)`` fitted on the training rows of a fold.

    ``logistic`` needs context features and both responses among the training rows; without them the model
    falls back to item means, and says so: ``used_`` is the kind actually fitted and ``fallback_`` the reason
    (None when it is the kind asked for).  Both are written with the estimates.
    """

    def __init__(self, kind: str, seed: int):
        self.kind = kind
        self.seed = seed

    def fit(self, features: FoldFeatures) -> "RewardModel":
        train = features.train
        self.items_ = pd.Index(pd.unique(train[ITEM_ID]))
        clicks = train.groupby(ITEM_ID)[RESPONSE].agg(["sum", "count"])
        prior = train[RESPONSE].mean()
        self.item_rate_ = (clicks["sum"] + prior * 10) / (clicks["count"] + 10)  # shrunk towards the mean
        self.prior_ = prior
        self.features_ = features if features.contexts is not None else None  # rows looked up, never copied
        self.model_, self.used_, self.fallback_ = None, "item_mean", None
        if self.kind == "logistic" and self.features_ is None:
            self.fallback_ = "the data has no context features"
        elif self.kind == "logistic" and train[RESPONSE].nunique() < 2:
            self.fallback_ = "the training rows hold only one response value"
        elif self.kind == "logistic":
            self.model_ = LogisticRegression(C=1.0, max_iter=1000, random_state=self.seed)
            self.model_.fit(self._design(train[CONTEXT_ID], train[ITEM_ID]), train[RESPONSE])
            self.used_ = "logistic"
        return self

    def _design(self, contexts: pd.Series, items: pd.Series) -> sparse.csr_matrix:
        """Context features next to a one-hot item, sparse (dense would be 6.4 GB at 800k rows x 1,000 items)."""
        context_part = sparse.csr_matrix(self.features_.context_matrix(contexts.to_numpy()))
        positions = self.items_.get_indexer(items.to_numpy())
        known = np.flatnonzero(positions >= 0)  # items unseen in training: an all-zero item part
        item_part = sparse.csr_matrix((np.ones(len(known)), (known, positions[known])),
                                      shape=(len(items), len(self.items_)))
        return sparse.hstack([context_part, item_part], format="csr")

    def predict(self, contexts: pd.Series, items: pd.Series) -> np.ndarray:
        if self.model_ is not None:
            return self.model_.predict_proba(self._design(contexts, items))[:, 1]
        return self.item_rate_.reindex(items.to_numpy()).fillna(self.prior_).to_numpy()


@dataclass
class _Terms:
    ips: np.ndarray  # per context: sum_e w_e r_e
    dr: np.ndarray  # per context: DR term
    weight: np.ndarray  # per event: w_e
    reward: np.ndarray  # per event: r_e
    propensity: np.ndarray  # per event: p_e
    estimate: np.ndarray  # per event: r_hat of its context's chosen item
    context_estimate: np.ndarray  # per context: r_hat(c, pi(c))
    matched: int


def off_policy_rows(recommendations: pd.DataFrame, features: FoldFeatures, test_propensity: np.ndarray,
                    reward_model: RewardModel, policy: str, fold: int) -> pd.DataFrame:
    """IPS, SNIPS and DR of ``policy``'s top-1 items on the fold's test events, with 95% intervals."""
    top1 = recommendations[recommendations["rank"] == 0][[CONTEXT_ID, ITEM_ID]]
    logged = features.test[[CONTEXT_ID, ITEM_ID, RESPONSE]].assign(**{PROPENSITY: test_propensity})
    estimate = reward_model.predict(top1[CONTEXT_ID], top1[ITEM_ID])
    predicted = top1.assign(score=estimate)
    jurity = {name: BinaryRecoMetrics.CTR(click_column="score", k=1, user_id_column=CONTEXT_ID,
                                          item_id_column=ITEM_ID, estimation=name.lower(),
                                          propensity_column=PROPENSITY)
              for name in ("IPS", "DR")}
    actual = logged.rename(columns={RESPONSE: "score"})
    point = {name: float(metric.get_score(actual, predicted)) for name, metric in jurity.items()}

    terms = _terms(top1.assign(estimate=estimate), logged)
    modelled = _modelled_variances(terms)
    out = []
    for name, values in (("IPS", terms.ips), ("DR", terms.dr)):
        variance = max(values.var(ddof=1) if len(values) > 1 else 0.0, modelled[name])
        half = Z_95 * np.sqrt(variance / len(values))
        # The true value of a click rate is in [0, 1], so the interval is cut there; the point estimates are
        # unbiased and may fall outside it (DR below 0), which is why they are not cut.
        low, high = np.clip([point[name] - half, point[name] + half], 0.0, 1.0).tolist()
        out.append((policy, fold, name, point[name], low, high, terms.matched, reward_model.used_))
    out.append((policy, fold, "SNIPS", *_snips(terms.weight, terms.reward), terms.matched, "none"))
    return pd.DataFrame(out, columns=OFF_POLICY_COLUMNS)


def _terms(top1: pd.DataFrame, logged: pd.DataFrame) -> _Terms:
    """Per-context IPS and DR terms and per-event weights (the decomposition of Jurity's estimates)."""
    joined = logged.merge(top1.rename(columns={ITEM_ID: "chosen"}), on=CONTEXT_ID, how="left")
    matched = (joined["chosen"] == joined[ITEM_ID]).to_numpy()
    weight = matched / joined[PROPENSITY].to_numpy()
    reward = joined[RESPONSE].to_numpy(dtype=float)
    correction = weight * (reward - joined["estimate"].to_numpy())
    per_context = pd.DataFrame({CONTEXT_ID: joined[CONTEXT_ID], "ips": weight * reward, "dr": correction})
    sums = per_context.groupby(CONTEXT_ID, sort=False)[["ips", "dr"]].sum()
    sums = sums.reindex(top1[CONTEXT_ID].to_numpy(), fill_value=0.0)
    dr = top1["estimate"].to_numpy() + sums["dr"].to_numpy()
    return _Terms(sums["ips"].to_numpy(), dr, weight, reward, joined[PROPENSITY].to_numpy(),
                  joined["estimate"].to_numpy(), top1["estimate"].to_numpy(), int(matched.sum()))


def _modelled_variances(terms: _Terms) -> dict[str, float]:
    """Per-context variances of the IPS and DR terms implied by the logging propensities (see module doc)."""
    matched = terms.weight > 0
    clicks = float(terms.reward[matched].sum())
    q = (clicks + Z_95 ** 2 / 2) / (matched.sum() + Z_95 ** 2)  # Agresti-Coull click rate of the chosen items
    n_contexts = len(terms.ips)
    per_event_share = len(terms.propensity) / n_contexts  # events per context (1 for event-level contexts)
    # E[w^2] needs 1 / (propensity of the *policy's* item), known only where it was logged: the mean of
    # 1[match] / p^2 over events estimates it without bias.  The logged items' own mean(1 / p) equals it under
    # uniform logging; under non-uniform logging it can be far smaller (a policy choosing rarely logged items),
    # so the larger of the two is used.
    inverse = max(float(np.mean(1 / terms.propensity)), float(np.mean(terms.weight ** 2)))
    gap = q - terms.estimate
    ips = per_event_share * q * inverse - q ** 2
    dr = terms.context_estimate.var() + per_event_share * np.mean(inverse * (q * (1 - q) + gap ** 2) - gap ** 2)
    return {"IPS": float(ips), "DR": float(dr)}


def _snips(weight: np.ndarray, reward: np.ndarray) -> tuple[float, float, float]:
    """Self-normalised IPS and its Wilson interval on the Kish effective sample size."""
    total = weight.sum()
    if total == 0:
        return float("nan"), 0.0, 1.0  # no test event matched the policy's choice: nothing is known
    value = float(weight @ reward / total)
    n_eff = total ** 2 / float(weight @ weight)
    return (value, *wilson(value * n_eff, n_eff))


def summarise_against_truth(estimates: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Bias, RMSE and interval coverage of each estimator against each policy's true top-1 value.

    ``estimates``: rows of ``off_policy_rows`` with a ``seed`` column; ``truth``: ``seed, fold, policy,
    truth``.  Returns one row per (policy, estimator) and one ``ALL`` row per estimator.
    """
    joined = estimates.merge(truth, on=["seed", "fold", "policy"])
    joined["error"] = joined["value"] - joined["truth"]
    # A case without an estimate (SNIPS with no matched event: NaN in [0, 1]) is not "covered": it is counted
    # apart, and bias, RMSE and coverage are over the cases that have an estimate.
    defined = joined["value"].notna()
    joined["covered"] = ((joined["low"] <= joined["truth"]) & (joined["truth"] <= joined["high"])).where(defined)
    rows = []
    for (policy, estimator), group in list(joined.groupby(["policy", "estimator"], sort=False)) + [
            (("ALL", name), joined[joined["estimator"] == name]) for name in ESTIMATORS]:
        rows.append({"policy": policy, "estimator": estimator, "cases": int(group["value"].notna().sum()),
                     "undefined_cases": int(group["value"].isna().sum()),
                     "bias": group["error"].mean(), "rmse": float(np.sqrt((group["error"] ** 2).mean())),
                     "coverage": group["covered"].mean(), "mean_matched_events": group["matched_events"].mean()})
    return pd.DataFrame(rows)
