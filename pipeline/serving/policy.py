"""A trained policy from a run directory, scoring raw contexts given in the data's own schema."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from pipeline.errors import ConfigError
from pipeline import layout
from pipeline.scoring import LinearScorer
from pipeline.values import plain

ITEM_COLUMNS = ("name", "category", "price")


class ServedPolicy:
    """The run's trained recommender for ``policy`` (seed, fold) plus the featurizer its contexts went through.

    ``context_fields`` maps each raw context column to ``"categorical"`` or ``"numeric"``: the request schema.
    """

    def __init__(self, run_dir: Path, policy: str, seed: int | None = None, fold: int = 0):
        run_dir = Path(run_dir)
        info = json.loads((run_dir / layout.RUN_JSON).read_text())
        seed = info["seeds"][0] if seed is None else seed
        folder = run_dir / layout.fold_folder(seed, fold)
        saved = run_dir / layout.recommender(seed, fold, policy)
        if not saved.is_file():
            known = sorted(p.parent.name for p in folder.glob(f"*/{layout.RECOMMENDER}"))
            raise ConfigError(f"{run_dir}: no trained policy {policy!r} for seed {seed}, fold {fold}; the run has: "
                              f"{', '.join(known) or 'none'}")
        self.policy = policy
        self.version = f"{run_dir.name}/{policy}/seed_{seed}/fold_{fold}"
        self.recommender = joblib.load(saved)
        featurizer_file = run_dir / layout.context_featurizer(seed, fold)
        self.featurizer = joblib.load(featurizer_file) if featurizer_file.is_file() else None
        self.context_fields = {} if self.featurizer is None else {
            **{c: "categorical" for c in self.featurizer.categorical}, **{c: "numeric" for c in self.featurizer.numeric}}
        self.items = _item_table(run_dir, seed)
        self.arms = list(self.recommender.mab.arms)
        self._scorer = None
        self._arm_by_key = {item_key(arm): arm for arm in self.arms}

    @property
    def contextual(self) -> bool:
        return bool(self.recommender.mab.is_contextual)

    def unusual(self, context: dict) -> list[tuple[str, str]]:
        """Context values unlike the training contexts (``TabularFeaturizer.unusual``); none without features."""
        return self.featurizer.unusual(context) if self.featurizer is not None else []

    def knows(self, item: Any) -> bool:
        return item_key(item) in self._arm_by_key

    def arm(self, item: Any) -> Any:
        """The arm object equal to ``item`` (JSON may give "7" for the arm 7)."""
        return self._arm_by_key[item_key(item)]

    def _vectors(self, contexts: list[dict]) -> np.ndarray | list:
        if not self.contextual:
            return [[]] * len(contexts)
        return self.featurizer.transform_records(contexts)

    def recommend(self, context: dict, k: int) -> list[dict]:
        """Top-k items with Mab2Rec's scores (sigmoid of the policy's expectation) and, for LinUCB, the bonus."""
        vector = self._vectors([context])
        bonus = None
        if self._scorer is None:
            self._scorer = _fast_scorer(self.recommender)
        if self._scorer:
            raw = self._scorer.scores(vector)[0]
            expectations = 1 / (1 + np.exp(-raw))  # Mab2Rec's recommend applies the same sigmoid
            order = np.flip(np.argsort(expectations)[-k:])  # and the same ordering
            items, scores = [self._scorer.arms[i] for i in order], expectations[order].tolist()
            bonus = self._scorer.bonus(vector)[0][order] if self._scorer.kind == "ucb" else None
        else:
            previous, self.recommender.top_k = self.recommender.top_k, k
            try:
                items, scores = self.recommender.recommend(vector, return_scores=True)
            finally:
                self.recommender.top_k = previous
        return self.item_rows(items, scores, bonus)

    def item_rows(self, items: list, scores, bonus=None, propensities=None) -> list[dict]:
        """The response rows of ranked items: id, score, LinUCB's bonus, the probability it was shown there, and
        the item table's columns."""
        out = []
        for rank, (item, score) in enumerate(zip(items, scores)):
            row = {"item_id": plain(item), "score": float(score)}
            if bonus is not None:
                row["exploration_bonus"] = float(bonus[rank])
            if propensities is not None:
                row["propensity"] = float(propensities[rank])
            row.update(self._item_fields.get(item_key(item), {}))
            out.append(row)
        return out

    @functools.cached_property
    def _item_fields(self) -> dict[str, dict]:
        """Each item's table columns as plain values, read once (a pandas lookup per item cost 0.07 ms)."""
        if self.items is None:
            return {}
        return {key: {c: plain(v) for c, v in row.items()} for key, row in self.items.iterrows()}

    def replace_model(self, recommender) -> None:
        """Swap in a restored snapshot of the recommender."""
        self.recommender, self._scorer = recommender, None

    def learner(self) -> "ServedPolicy":
        """A copy that learns while this one serves: its own recommender, the same featurizer and items."""
        clone = copy.copy(self)
        clone.recommender, clone._scorer = copy.deepcopy(self.recommender), None
        return clone

    def publish(self, recommender, version: str) -> None:
        """Serve ``recommender`` (a learner's copy) from now on, its stacked scorer built before the swap, so the
        requests that follow pay nothing for it."""
        scorer = _fast_scorer(recommender)
        self.recommender, self._scorer, self.version = recommender, scorer, version

    def learn(self, contexts: list[dict], items: list, rewards: list[float]) -> None:
        self._scorer = None  # the stacked models are stale once the policy learns
        arms = [self.arm(item) for item in items]
        if self.contextual:
            self.recommender.partial_fit(arms, rewards, self._vectors(contexts))
        else:
            self.recommender.partial_fit(arms, rewards)


def _fast_scorer(recommender) -> LinearScorer | bool:
    """LinUCB's and greedy LinGreedy's arms stacked into one matrix product; False for every other policy
    (sampling ones, LinTS and LinGreedy with epsilon > 0, keep MABWiser's own path)."""
    if not recommender.mab.is_contextual:
        return False
    scorer = LinearScorer.from_recommender(recommender)
    return scorer if scorer is not None and scorer.is_deterministic else False


def _item_table(run_dir: Path, seed: int) -> pd.DataFrame | None:
    for name in (layout.parquet(layout.item_map(seed)), layout.parquet(layout.data_table(seed, "items"))):
        if (run_dir / name).is_file():
            items = pd.read_parquet(run_dir / name)
            columns = [c for c in ITEM_COLUMNS if c in items.columns]
            return items.set_index(items["item_id"].map(item_key))[columns]
    return None


def item_key(value: Any) -> str:
    """An item id as text: the key the service looks items up by."""
    return str(plain(value))
