"""Beyond accuracy: how varied, how broad and how novel each policy's recommendation lists are.

At every k of ``evaluation.k_list``:

- ``inter_list_diversity@k`` (Jurity): mean cosine distance between the top-k lists of different test
  contexts (0: everyone gets the same list, 1: no two lists share an item);
- ``intra_list_diversity@k`` (Jurity, k >= 2, needs item features): mean cosine distance between the
  item vectors within one list (how different the items shown together are);
- ``coverage@k``: share of the catalog that appears in at least one top-k list;
- ``novelty@k``: mean over the shown items of ``-log2 p(item)``, with ``p`` the item's share of the fold's
  training log (add-one smoothed): higher means less popular items are shown.

Jurity samples contexts for the diversity metrics (``evaluation.diversity_sample`` per run, 3 runs),
seeded by the config seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jurity.recommenders import DiversityRecoMetrics

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID

COLUMNS = ["policy", "metric", "k", "fold", "value", "low", "high", "support"]
NAMES = ("inter_list_diversity", "intra_list_diversity", "coverage", "novelty")


def beyond_accuracy_rows(recommendations: pd.DataFrame, train_items: pd.Series, catalog_size: int,
                         item_vectors: pd.DataFrame | None, k_list: list[int], sample: int, seed: int,
                         policy: str, fold: int) -> pd.DataFrame:
    lists = recommendations[[CONTEXT_ID, ITEM_ID, "score", "rank"]]
    counts = train_items.value_counts()
    n_lists = lists[CONTEXT_ID].nunique()
    common = dict(click_column="score", user_id_column=CONTEXT_ID, item_id_column=ITEM_ID,
                  user_sample_size=min(sample, n_lists), seed=seed, num_runs=3)
    rows = []
    for k in k_list:
        top = lists[lists["rank"] < k]
        predicted = top[[CONTEXT_ID, ITEM_ID, "score"]]
        shown_share = (counts.reindex(top[ITEM_ID]).fillna(0).to_numpy() + 1) / (len(train_items) + catalog_size)
        values = {
            "inter_list_diversity": DiversityRecoMetrics.InterListDiversity(k=k, **common).get_score(predicted, predicted)
            if n_lists > 1 else np.nan,
            "coverage": top[ITEM_ID].nunique() / catalog_size,
            "novelty": float(np.mean(-np.log2(shown_share))),
        }
        if item_vectors is not None and k >= 2:
            values["intra_list_diversity"] = DiversityRecoMetrics.IntraListDiversity(
                item_vectors, k=k, **common).get_score(predicted, predicted)
        rows += [(policy, name, k, fold, float(value), np.nan, np.nan, n_lists) for name, value in values.items()]
    return pd.DataFrame(rows, columns=COLUMNS)
