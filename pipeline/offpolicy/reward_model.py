"""``r_hat(context, item)``: the reward model of the DR-type estimators, cross-fitted over the test contexts.

``logistic`` is a logistic regression on the context features next to a one-hot item; ``item_mean`` each
item's click rate, shrunk towards the overall rate.  With ``cross_fit = K > 1`` the test contexts are split
into K seeded parts and each part's predictions come from a model fitted on the training rows plus the
*other* parts' test rows (Chernozhukov et al. 2018): the model sees more of the test period, and never the
events it corrects, so the DR correction term stays unbiased.  ``cross_fit = 1`` fits on the training rows
only (Jurity's DR then gives the same number; tested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID, RESPONSE
from pipeline.features import FoldFeatures

SHRINK_EVENTS = 10  # item_mean: each item's rate is shrunk towards the overall rate by this many pseudo-events


class RewardModel:
    """One fitted ``r_hat``; ``used_`` is the kind actually fitted and ``fallback_`` why it differs from ``kind``.

    ``logistic`` needs context features and both responses among its rows; without them the model falls back
    to item means, and says so (written with the estimates).
    """

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed

    def fit(self, rows: pd.DataFrame, features: FoldFeatures) -> "RewardModel":
        self.items_ = pd.Index(pd.unique(rows[ITEM_ID]))
        clicks = rows.groupby(ITEM_ID)[RESPONSE].agg(["sum", "count"])
        self.prior_ = float(rows[RESPONSE].mean())
        self.item_rate_ = (clicks["sum"] + self.prior_ * SHRINK_EVENTS) / (clicks["count"] + SHRINK_EVENTS)
        self.features_ = features if features.contexts is not None else None  # rows looked up, never copied
        self.model_, self.used_, self.fallback_ = None, "item_mean", None
        if self.kind == "logistic" and self.features_ is None:
            self.fallback_ = "the data has no context features"
        elif self.kind == "logistic" and rows[RESPONSE].nunique() < 2:
            self.fallback_ = "its rows hold only one response value"
        elif self.kind == "logistic" and not features.reward.binary:
            self.fallback_ = "the responses are real-valued, not 0/1 clicks"
        elif self.kind == "logistic":
            self.model_ = LogisticRegression(C=1.0, max_iter=1000, random_state=self.seed)
            self.model_.fit(self._design(rows[CONTEXT_ID], rows[ITEM_ID]), rows[RESPONSE])
            self.used_ = "logistic"
        return self

    def _design(self, contexts: pd.Series, items: pd.Series) -> sparse.csr_matrix:
        """Context features next to a one-hot item, sparse (dense would be 6.4 GB at 800k rows x 1,000 items)."""
        context_part = sparse.csr_matrix(self.features_.context_matrix(np.asarray(contexts)))
        positions = self.items_.get_indexer(np.asarray(items))
        known = np.flatnonzero(positions >= 0)  # items unseen by the model: an all-zero item part
        item_part = sparse.csr_matrix((np.ones(len(known)), (known, positions[known])),
                                      shape=(len(items), len(self.items_)))
        return sparse.hstack([context_part, item_part], format="csr")

    def predict(self, contexts, items) -> np.ndarray:
        """``r_hat`` of each (context, item) pair."""
        if self.model_ is not None:
            return self.model_.predict_proba(self._design(contexts, items))[:, 1]
        return self.item_rate_.reindex(np.asarray(items)).fillna(self.prior_).to_numpy()

    def predict_matrix(self, contexts: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``r_hat`` of every item for every context, shape (contexts, items), without building pairs."""
        if self.model_ is None:
            rates = self.item_rate_.reindex(np.asarray(items)).fillna(self.prior_).to_numpy()
            return np.broadcast_to(rates, (len(contexts), len(items)))
        n_context = self.model_.coef_.shape[1] - len(self.items_)
        coef = self.model_.coef_[0]
        positions = self.items_.get_indexer(items)
        item_effect = np.where(positions >= 0, coef[n_context:][positions], 0.0)
        context_effect = self.features_.context_matrix(np.asarray(contexts)) @ coef[:n_context]
        return expit(context_effect[:, None] + item_effect[None, :] + self.model_.intercept_[0])


class CrossFittedRewardModel:
    """``r_hat`` for the test events of one fold: K models, each predicting the test contexts it was not fitted on."""

    def __init__(self, kind: str, cross_fit: int, seed: int):
        self.kind, self.cross_fit, self.seed = kind, cross_fit, seed

    def fit(self, features: FoldFeatures) -> "CrossFittedRewardModel":
        contexts = pd.unique(features.test[CONTEXT_ID])
        parts = min(self.cross_fit, len(contexts))
        rng = np.random.default_rng([self.seed, 13])
        self.part_of_ = pd.Series(rng.permutation(np.arange(len(contexts)) % max(parts, 1)), index=contexts)
        test_part = self.part_of_.loc[features.test[CONTEXT_ID].to_numpy()].to_numpy()
        self.models_ = []
        for part in range(max(parts, 1)):
            others = features.test[test_part != part] if parts > 1 else features.test.iloc[:0]
            rows = pd.concat([features.train[[CONTEXT_ID, ITEM_ID, RESPONSE]], others[[CONTEXT_ID, ITEM_ID, RESPONSE]]],
                             ignore_index=True)
            self.models_.append(RewardModel(self.kind, self.seed).fit(rows, features))
        fallbacks = {model.fallback_ for model in self.models_ if model.fallback_}
        self.used_ = "logistic" if all(m.used_ == "logistic" for m in self.models_) else "item_mean"
        self.fallback_ = "; ".join(sorted(fallbacks)) or None
        return self

    @property
    def description(self) -> str:
        """How ``r_hat`` was fitted, for the ``reward_model`` column."""
        return self.used_ + (f", {len(self.models_)}-fold cross-fitted" if len(self.models_) > 1 else ", training rows")

    def _parts(self, contexts) -> np.ndarray:
        return self.part_of_.reindex(np.asarray(contexts)).fillna(0).to_numpy(dtype=int)

    def predict(self, contexts, items) -> np.ndarray:
        contexts, items = np.asarray(contexts), np.asarray(items)
        parts, out = self._parts(contexts), np.empty(len(contexts))
        for part, model in enumerate(self.models_):
            rows = np.flatnonzero(parts == part)
            if len(rows):
                out[rows] = model.predict(contexts[rows], items[rows])
        return out

    def predict_matrix(self, contexts: np.ndarray, items: np.ndarray) -> np.ndarray:
        contexts = np.asarray(contexts)
        parts, out = self._parts(contexts), np.empty((len(contexts), len(items)))
        for part, model in enumerate(self.models_):
            rows = np.flatnonzero(parts == part)
            if len(rows):
                out[rows] = model.predict_matrix(contexts[rows], items)
        return out
