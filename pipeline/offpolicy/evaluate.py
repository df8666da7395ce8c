"""Off-policy rows of one policy on one fold: every estimator at k = 1 and k = leaderboard_k, with diagnostics.

The logged test events of a fold (``LoggedTestEvents``) are prepared once by the runner: rewards,
propensities, the cross-fitted ``r_hat`` at the logged item.  Each policy task adds its action probabilities
(``target.py``) and gets a row per (k, estimator) plus the bootstrap draws of each estimate, labelled
``"<estimator>@<k>"``, for the decision's paired differences.

The logging policy is evaluated on its own log: with ``pi = p`` every weight is 1 and every estimator is the
observed click rate; it is written once, as estimator ``observed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import OffPolicyConfig
from pipeline.data.dataset import CONTEXT_ID, ITEM_ID, RESPONSE
from pipeline.rewards import CLICKS, RewardScale
from pipeline.evaluation import LOGGING
from pipeline.features import FoldFeatures
from pipeline.offpolicy.diagnostics import overlap
from pipeline.offpolicy.estimators import IPS, Estimator, LoggedFeedback, make_estimators
from pipeline.offpolicy.intervals import estimate
from pipeline.offpolicy.reward_model import CrossFittedRewardModel
from pipeline.offpolicy.target import TargetTerms
from pipeline.uncertainty import Bootstrap

OBSERVED = "observed"
OFF_POLICY_COLUMNS = ["policy", "fold", "k", "estimator", "value", "low", "high", "se", "raw_value", "bias",
                      "matched_events", "effective_sample_size", "max_weight", "max_weight_share", "mean_weight",
                      "mean_weight_low", "mean_weight_high", "effective_clicks", "unsupported_share", "reliable", "flag",
                      "reward_model", "target"]
DIAGNOSTICS = ["matched_events", "effective_sample_size", "max_weight", "max_weight_share", "mean_weight",
               "mean_weight_low", "mean_weight_high", "effective_clicks", "unsupported_share", "reliable", "flag"]


@dataclass
class LoggedTestEvents:
    """A fold's logged test events as the estimators need them (built once per fold)."""

    test: pd.DataFrame  # context_id, item_id of the test rows, in order
    context_ids: np.ndarray  # the fold's test contexts, in the bootstrap's order
    context: np.ndarray  # per event: position in context_ids
    reward: np.ndarray
    propensity: np.ndarray
    reward_hat: np.ndarray  # cross-fitted r_hat(x_e, a_e)
    logged_items: set
    reward_model: CrossFittedRewardModel
    reward_scale: RewardScale = CLICKS

    @classmethod
    def build(cls, features: FoldFeatures, propensity: np.ndarray, reward_model: CrossFittedRewardModel,
              rows: np.ndarray | None = None) -> "LoggedTestEvents":
        """``rows``: which test rows to use (a mask; on a slate log the top slot's, whose clicks the slot does not
        damp), all by default."""
        logged_items = set(features.train[ITEM_ID].tolist()) | set(features.test[ITEM_ID].tolist())
        keep = np.ones(len(features.test), dtype=bool) if rows is None else rows
        test = features.test[[CONTEXT_ID, ITEM_ID]][keep].reset_index(drop=True)
        context_ids = pd.unique(test[CONTEXT_ID])
        return cls(test, context_ids, pd.Index(context_ids).get_indexer(test[CONTEXT_ID]),
                   features.test[RESPONSE].to_numpy(dtype=float)[keep], np.asarray(propensity, dtype=float)[keep],
                   reward_model.predict(test[CONTEXT_ID], test[ITEM_ID]), logged_items, reward_model, features.reward)

    def feedback(self, terms: TargetTerms) -> LoggedFeedback:
        return LoggedFeedback(self.context, self.reward, self.propensity, terms.probability, self.reward_hat,
                              terms.direct, len(self.context_ids), reward_scale=self.reward_scale)


def policy_estimates(targets: dict[int, TargetTerms], logged: LoggedTestEvents, config: OffPolicyConfig,
                     n_items: int, bootstrap: Bootstrap | None, policy: str, fold: int
                     ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Every estimator at every k for one policy: rows of ``OFF_POLICY_COLUMNS`` and the draws by label."""
    rows, draws = [], {}
    for k, terms in targets.items():
        data = logged.feedback(terms)
        diagnostics = overlap(data, terms.unsupported, config)
        results = {}
        for estimator in make_estimators(n_items, config.switch_tau_per_item):
            # A self-normalised estimate's interval also covers its unnormalised twin's (SNIPS: IPS's, SNDR: DR's):
            # normalising by weights that missed the large ones can settle on a wrong value with a narrow interval.
            twin = results.get(estimator.unnormalised) if estimator.unnormalised else None
            result = estimate(estimator, data, bootstrap, logged.context_ids, f"{policy}/{estimator.name}@{k}", twin)
            results[estimator.name] = result
            rows.append(off_policy_row(policy, fold, k, estimator.name, result, diagnostics,
                             logged.reward_model.description if estimator.uses_reward_model else "none",
                             terms.method))
            if result.draws is not None:
                draws[f"{estimator.name}@{k}"] = result.draws
    return pd.DataFrame(rows, columns=OFF_POLICY_COLUMNS), draws


def logging_policy_estimates(logged: LoggedTestEvents, config: OffPolicyConfig, ks: list[int],
                             bootstrap: Bootstrap | None, fold: int) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The logging policy's observed click rate (its value on its own log, for every k: it shows one item)."""
    n = len(logged.reward)
    data = LoggedFeedback(logged.context, logged.reward, logged.propensity, logged.propensity, logged.reward_hat,
                          logged.reward_hat, len(logged.context_ids), reward_scale=logged.reward_scale)
    result = estimate(IPS(), data, bootstrap, logged.context_ids, f"{LOGGING}/{OBSERVED}")
    diagnostics = overlap(data, np.zeros(n), config)
    rows = [off_policy_row(LOGGING, fold, k, OBSERVED, result, diagnostics, "none", "the logged items") for k in ks]
    draws = {f"{OBSERVED}@{k}": result.draws for k in ks} if result.draws is not None else {}
    return pd.DataFrame(rows, columns=OFF_POLICY_COLUMNS), draws


def off_policy_row(policy: str, fold: int, k: int, name: str, result, diagnostics: dict, reward_model: str,
                   method: str) -> tuple:
    """One row of ``OFF_POLICY_COLUMNS``."""
    return (policy, fold, k, name, result.value, result.low, result.high, result.se, result.raw_value, result.bias,
            *(diagnostics[column] for column in DIAGNOSTICS), reward_model, method)


def summarise_against_truth(estimates: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Bias, RMSE and interval coverage of each estimator against each policy's true value at each k.

    ``estimates``: rows of ``policy_estimates`` with a ``seed`` column; ``truth``: ``seed, fold, policy, k,
    truth`` (``true_ctr@k``).  Returns one row per (policy, k, estimator) and one ``ALL`` row per (k, estimator).
    A case without an estimate (SNIPS with no matched event) is counted apart; bias, RMSE and coverage are
    over the cases that have one; bias and RMSE use the uncut estimate (``raw_value``).
    """
    joined = estimates.merge(truth, on=["seed", "fold", "policy", "k"])
    joined["error"] = joined["raw_value" if "raw_value" in joined else "value"] - joined["truth"]  # uncut: unbiased
    defined = joined["value"].notna()
    joined["covered"] = ((joined["low"] <= joined["truth"]) & (joined["truth"] <= joined["high"])).where(defined)
    groups = list(joined.groupby(["policy", "k", "estimator"], sort=False))
    groups += [(("ALL", k, name), group) for (k, name), group in joined.groupby(["k", "estimator"], sort=False)]
    rows = []
    for (policy, k, estimator), group in groups:
        rows.append({"policy": policy, "k": k, "estimator": estimator, "cases": int(group["value"].notna().sum()),
                     "undefined_cases": int(group["value"].isna().sum()),
                     "bias": group["error"].mean(), "rmse": float(np.sqrt((group["error"] ** 2).mean())),
                     "coverage": group["covered"].mean(), "mean_matched_events": group["matched_events"].mean(),
                     "mean_effective_sample_size": group["effective_sample_size"].mean(),
                     "unreliable_cases": int((~group["reliable"].astype(bool)).sum())})
    return pd.DataFrame(rows)


__all__ = ["Estimator", "LoggedTestEvents", "OFF_POLICY_COLUMNS", "off_policy_row", "policy_estimates",
           "logging_policy_estimates", "summarise_against_truth"]
