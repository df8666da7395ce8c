"""Estimated logging propensities, for logs that do not record them (``data.files.columns.propensity: estimate``).

The logging policy's probability of showing item ``a`` in context ``x`` is fitted on the fold's *training*
rows: a multinomial logistic regression of the shown item on the context features, mixed with the items'
smoothed training frequencies, ``p(a | x) = (1 - lam) softmax(W x)_a + lam f_a`` with ``lam = 0.1`` (so no
logged item gets a propensity near 0 from a confident but wrong model; items never shown in training get
the add-one frequency).  Without context features, or with more items or rows than a multinomial model can
be fitted on here, the frequencies alone are used (``used_`` and ``fallback_`` say so).

How well it fits is measured on the test rows, whose logged items it never saw: the mean log loss of the
logged items under the model, next to the frequencies' and a uniform logger's.  Every off-policy estimate
then rests on this model; the run says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID
from pipeline.features import FoldFeatures

FREQUENCY_SHARE = 0.1
MAX_CLASSES = 500  # items a multinomial model is fitted for; beyond it the frequencies are used
MAX_ROWS = 300_000


class LoggingPolicyModel:
    def __init__(self, seed: int):
        self.seed = seed

    def fit(self, features: FoldFeatures, catalog: list) -> "LoggingPolicyModel":
        train = features.train
        self.items_ = pd.Index(catalog)
        counts = train[ITEM_ID].value_counts().reindex(self.items_, fill_value=0).to_numpy(dtype=float)
        self.frequency_ = (counts + 1) / (counts.sum() + len(self.items_))  # add-one: every item keeps support
        self.features_, self.model_, self.used_, self.fallback_ = features, None, "frequency", None
        shown = train[ITEM_ID].nunique()
        if features.contexts is None:
            self.fallback_ = "the data has no context features"
        elif shown > MAX_CLASSES or len(train) > MAX_ROWS:
            self.fallback_ = (f"{shown} items x {len(train)} rows is beyond the multinomial model's limits "
                              f"({MAX_CLASSES} items, {MAX_ROWS} rows)")
        elif shown < 2:
            self.fallback_ = "the training rows show a single item"
        else:
            self.model_ = LogisticRegression(C=1.0, max_iter=300, random_state=self.seed)
            self.model_.fit(features.context_matrix(train[CONTEXT_ID].to_numpy()), train[ITEM_ID].to_numpy())
            self.used_ = "multinomial logistic + 10% frequencies"
        return self

    def propensity(self, contexts: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Estimated ``p(item | context)`` of each pair."""
        positions = self.items_.get_indexer(items)
        frequency = np.where(positions >= 0, self.frequency_[np.maximum(positions, 0)], 1 / (len(self.items_) + 1))
        if self.model_ is None:
            return frequency
        probabilities = self.model_.predict_proba(self.features_.context_matrix(np.asarray(contexts)))
        column = pd.Index(self.model_.classes_).get_indexer(items)
        model = np.where(column >= 0, probabilities[np.arange(len(items)), np.maximum(column, 0)], 0.0)
        return (1 - FREQUENCY_SHARE) * model + FREQUENCY_SHARE * frequency

    def fit_report(self, test: pd.DataFrame) -> dict:
        """Mean log loss of the test rows' logged items: the model's, the frequencies', a uniform logger's."""
        items = test[ITEM_ID].to_numpy()
        positions = self.items_.get_indexer(items)
        frequency = np.where(positions >= 0, self.frequency_[np.maximum(positions, 0)], 1 / (len(self.items_) + 1))
        return {"model": self.used_, "fallback": self.fallback_,
                "test_log_loss": float(-np.mean(np.log(self.propensity(test[CONTEXT_ID].to_numpy(), items)))),
                "frequency_log_loss": float(-np.mean(np.log(frequency))),
                "uniform_log_loss": float(np.log(len(self.items_)))}
