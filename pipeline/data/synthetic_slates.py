"""Slate logs in the synthetic shop: impressions of L items, one row per slot, clicks by the position-based model.

Slot k of an impression is looked at with probability ``theta_k`` (``slot_examination``, default ``1/k``) and a
looked-at item is clicked with the click model's probability, so ``P(click at k | x, a) = theta_k r(x, a)``.
The logger fills the slots one by one without repeating an item, each time in proportion to its one-item
distribution ``p(a | x)`` (uniform, or the softmax logger): a Plackett-Luce logger, whose probabilities are

- of the first k items (``cascade_propensity``): ``prod_{j<=k} p(a_j) / (1 - sum_{i<j} p(a_i))``;
- of the whole slate (``slate_propensity``): the same product up to L;
- of item a at slot k (``propensity``), exactly: ``p_a`` at slot 1; ``p_a sum_{b != a} p_b / (1 - p_b)`` at
  slot 2; ``p_a sum_{b != c; b, c != a} p_b p_c / ((1 - p_b) (1 - p_b - p_c))`` at slot 3 (``1/m`` everywhere
  under uniform logging).  Longer slates are logged uniformly only (``SyntheticConfig`` says so).

The value of a list under this model, per slot, is ``(1/L) sum_k theta_k r(x, a_k)`` (``true_slate_ctr@L``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data.dataset import (CASCADE_PROPENSITY, EVENT_ID, ITEM_ID, POSITION, PROPENSITY, RESPONSE, SLATE_ID,
                                   SLATE_PROPENSITY)

PAIR_CELLS = 4_000_000  # events x items x items held at once for the slot-3 marginals


def plackett_luce_marginals(p: np.ndarray, n_slots: int) -> np.ndarray:
    """(events, slots, items): the probability that a Plackett-Luce logger with one-item distribution ``p``
    (events, items) puts each item at each slot (the module docstring's formulas; ``n_slots <= 3``)."""
    if n_slots > 3:
        raise ValueError("exact Plackett-Luce marginals are implemented for up to 3 slots")
    n, m = p.shape
    out = np.empty((n, n_slots, m))
    out[:, 0] = p
    ratio = p / (1 - p)
    if n_slots >= 2:
        out[:, 1] = p * (ratio.sum(axis=1, keepdims=True) - ratio)
    if n_slots >= 3:
        chunk = max(1, PAIR_CELLS // (m * m))
        for start in range(0, n, chunk):
            block, odds = p[start:start + chunk], ratio[start:start + chunk]
            with np.errstate(divide="ignore", invalid="ignore"):
                pairs = odds[:, :, None] * block[:, None, :] / (1 - block[:, :, None] - block[:, None, :])
            pairs[:, np.arange(m), np.arange(m)] = 0.0  # b != c
            total = pairs.sum(axis=(1, 2))[:, None]
            out[start:start + chunk, 2] = block * (total - pairs.sum(axis=2) - pairs.sum(axis=1))
    return out


def slot_distributions(model, events: pd.DataFrame, n_slots: int):
    """Per block of events: (rows, item-position marginals (rows, slots, items), click probabilities)."""
    for rows, logger, clicks in model.blocks(events):
        if len(model.logger) == 0:  # uniform: every slot 1/m, no need for the sums
            marginals = np.repeat(logger[:, None, :], n_slots, axis=1)
        else:
            marginals = plackett_luce_marginals(logger, n_slots)
        yield rows, logger, marginals, clicks


def logged_slot_values(model, events: pd.DataFrame, n_slots: int) -> np.ndarray:
    """(events, slots): the logging policy's true click probability at each slot if the slot is looked at,
    ``sum_a mu(a at k | x) r(x, a)``."""
    out = np.empty((len(events), n_slots))
    for rows, _, marginals, clicks in slot_distributions(model, events, n_slots):
        out[rows] = (marginals * clicks[:, None, :]).sum(axis=2)
    return out


def log_slates(model, events: pd.DataFrame, item_ids: np.ndarray, n_slots: int, examination: np.ndarray,
               rng: np.random.Generator) -> pd.DataFrame:
    """One row per (impression, slot): the impression's event columns, ``slate_id``, ``position``, the shown item,
    its three propensities and the click (``event_id`` renumbered per row)."""
    shown = np.empty((len(events), n_slots), dtype=np.int64)
    marginal, cascade = np.empty((len(events), n_slots)), np.empty((len(events), n_slots))
    for rows, logger, marginals, _ in slot_distributions(model, events, n_slots):
        # Gumbel top-k: the L largest log p + Gumbel noise are a Plackett-Luce draw without replacement
        keys = np.log(logger) + rng.gumbel(size=logger.shape)
        picked = np.argsort(-keys, axis=1, kind="stable")[:, :n_slots]
        chosen = np.take_along_axis(logger, picked, axis=1)
        remaining = 1.0 - np.cumsum(chosen, axis=1) + chosen  # 1 - sum of the items above each slot
        shown[rows], cascade[rows] = picked, np.cumprod(chosen / remaining, axis=1)
        marginal[rows] = marginals[np.arange(len(rows))[:, None], np.arange(n_slots)[None, :], picked]
    slots = events.loc[events.index.repeat(n_slots)].reset_index(drop=True)
    slots[SLATE_ID] = np.repeat(np.arange(len(events)), n_slots)
    slots[POSITION] = np.tile(np.arange(1, n_slots + 1), len(events))
    slots[ITEM_ID] = item_ids[shown.ravel()]
    slots[PROPENSITY] = marginal.ravel()
    slots[SLATE_PROPENSITY] = np.repeat(cascade[:, -1], n_slots)
    slots[CASCADE_PROPENSITY] = cascade.ravel()
    attraction = model.probability_of(slots, slots[ITEM_ID].to_numpy())
    looked = np.tile(examination, len(events))
    slots[RESPONSE] = (rng.random(len(slots)) < looked * attraction).astype(np.int8)
    slots[EVENT_ID] = np.arange(len(slots))
    return slots
