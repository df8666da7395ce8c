"""Split stage: which interaction rows train each fold and which test it.

- ``temporal`` (default): the latest ``test_fraction`` of events, by timestamp, is the one test fold, as a
  policy trained on the past would meet the future (an impression of a grouped slate log stays whole).
- ``kfold``: ``n_folds`` folds grouped by user, so no user (and no impression of a slate log) is on both
  sides; shuffled with the config seed, or, with ``shuffle: false``, exactly Mab2Rec's ``cv`` folds.
- ``given``: the user's separate train and test files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold

from pipeline.config import SplitConfig
from pipeline.data.dataset import SLATE_ID, TIMESTAMP, USER_ID, Dataset
from pipeline.errors import ConfigError, DataError


@dataclass(frozen=True)
class Fold:
    index: int
    train_rows: np.ndarray  # positions in Dataset.interactions
    test_rows: np.ndarray


def make_folds(dataset: Dataset, method: str, config: SplitConfig, seed: int) -> list[Fold]:
    origin = dataset.source("interactions")
    if method == "given":
        folds = [Fold(0, np.flatnonzero(~dataset.test_mask), np.flatnonzero(dataset.test_mask))]
    elif method == "temporal":
        if not dataset.has_timestamp:
            raise ConfigError(f"split.method is 'temporal' but {origin} has no timestamp column "
                              "(data.files.columns.timestamp); add one or set split.method: kfold")
        order = np.argsort(dataset.interactions[TIMESTAMP].to_numpy(), kind="stable")
        n_test = int(round(len(order) * config.test_fraction))
        test = np.zeros(len(order), dtype=bool)
        test[order[len(order) - n_test:]] = True
        if dataset.slates_grouped:  # an impression straddling the cut goes to the test side whole
            slates = dataset.interactions[SLATE_ID].to_numpy()
            test |= np.isin(slates, slates[test])
        folds = [Fold(0, np.flatnonzero(~test), np.flatnonzero(test))]
    else:
        users = dataset.interactions[USER_ID].to_numpy()
        n_users = len(np.unique(users))
        if n_users < config.n_folds:
            raise ConfigError(f"split.n_folds={config.n_folds} but {origin} has only {n_users} distinct users; "
                              "folds are grouped by user, so lower n_folds")
        # shuffle=False is exactly the GroupKFold Mab2Rec's benchmark(cv=...) uses, for reproducing its numbers.
        splitter = GroupKFold(n_splits=config.n_folds, shuffle=config.shuffle,
                              random_state=seed if config.shuffle else None)
        folds = [Fold(i, train, test) for i, (train, test) in enumerate(splitter.split(users, groups=users))]
    for fold in folds:
        if len(fold.test_rows) == 0:
            raise DataError(f"{origin}: the test split of fold {fold.index} is empty ({method} split with "
                            f"test_fraction={config.test_fraction} of {len(dataset.interactions)} events); "
                            "use more data or a larger split.test_fraction")
        if len(fold.train_rows) == 0:
            raise DataError(f"{origin}: the training split of fold {fold.index} is empty; nothing to learn from")
    return folds
