"""The evaluated policy's slate probabilities at the logged rows: what the slate estimators weight by.

A policy's slate for context ``x`` is its top-L list (slot k = rank k).  Every policy is written as a mixture
``(1 - eps) * (lists it draws) + eps * (a uniformly random list, without replacement)``:

- deterministic policies: their one list (``eps = 0``); Random: ``eps = 1``; LinGreedy: its greedy list and
  ``eps = epsilon`` (its exploring contexts rank random scores: a uniform random list);
- sampling policies (Thompson sampling, LinTS, Popularity, ClustersTS, NeuralLinear-TS): ``action_samples``
  Monte Carlo lists per context, each of weight ``1 / S``;
- Mab2Rec-path sampling policies without a fast scorer: the one list they produced (the method says so).

With ``m`` arms and ``U_k = 1 / (m (m-1) ... (m-k+1))`` (a uniform list's probability of one k-item prefix):

- ``pi(a at k | x) = (1 - eps) f_k(a) + eps / m``, ``f_k`` the share of the drawn lists with ``a`` at slot k
  (and ``pi(a in the list | x) = (1 - eps) sum_k f_k(a) + eps L / m``);
- ``pi(a_1..a_k | x) = (1 - eps) g_k(a_1..a_k) + eps U_k`` (the prefix has distinct arms), ``g_k`` the share of
  drawn lists that start with it; the whole slate is the prefix of length L.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID
from pipeline.offpolicy.slate import LoggedSlates, SlateTerms
from pipeline.offpolicy.target import MONTE_CARLO_CELLS, scorer_kind
from pipeline.scoring import ScoringInput, top_k

CHUNK_CELLS = 2_000_000  # contexts x draws x slots held at once


def slate_target_terms(recommendations: pd.DataFrame, scorer, inputs: ScoringInput | None, logged: LoggedSlates,
                       samples: int, seed: int, stochastic_without_scorer: bool = False) -> SlateTerms:
    """``SlateTerms`` of one policy on a fold's logged slates (``recommendations``: its ranked lists)."""
    kind, n_slots = scorer_kind(scorer), logged.n_slots
    if kind == "lists":
        arms, lists = _lists(recommendations, logged)
        draw = lambda start, stop, rng: lists[start:stop]  # noqa: E731
        explore, method = 0.0, "one sampled list" if stochastic_without_scorer else "its lists"
    else:
        arms = pd.Index(scorer.arms)
        if list(inputs.context_ids) != list(logged.context_ids):
            raise AssertionError("the scoring input and the logged slates must list the test contexts alike")
        explore = {"uniform": 1.0, "epsilon": getattr(scorer, "epsilon", 0.0), "sampling": 0.0}[kind]
        if kind == "sampling":  # the same budget of scored cells as the one-item estimators' Monte Carlo
            samples = int(max(1, min(samples, MONTE_CARLO_CELLS // max(len(logged.context_ids) * len(arms), 1))))
        method = {"uniform": "uniform random lists", "epsilon": "greedy list + epsilon x uniform random lists",
                  "sampling": f"Monte Carlo, {samples} lists per context"}[kind]

        def draw(start, stop, rng):
            matrix = inputs.matrix[start:stop]
            if kind == "uniform":
                return np.empty((stop - start, 0, n_slots), dtype=np.int64)
            if kind == "epsilon":
                return top_k(scorer.scores(matrix), n_slots)[0][:, None, :]
            return np.stack([top_k(scorer.expectations(matrix, rng), n_slots)[0] for _ in range(samples)], axis=1)

    if len(arms) < n_slots:
        raise ValueError(f"the policy ranks {len(arms)} items, fewer than the log's {n_slots} slots")
    return _terms(draw, arms, explore, method, logged, np.random.default_rng([seed, 29]),
                  samples if kind == "sampling" else 1)


def _lists(recommendations: pd.DataFrame, logged: LoggedSlates) -> tuple[pd.Index, np.ndarray]:
    """Arms (every listed or logged item) and each context's top-L list as arm positions, -1 where none."""
    n_slots = logged.n_slots
    listed = recommendations[recommendations["rank"] < n_slots]
    arms = pd.Index(pd.unique(np.r_[listed[ITEM_ID].to_numpy(dtype=object), logged.item.astype(object)]))
    lists = np.full((len(logged.context_ids), 1, n_slots), -1, dtype=np.int64)
    row = pd.Index(logged.context_ids).get_indexer(listed[CONTEXT_ID].to_numpy())
    keep = row >= 0
    lists[row[keep], 0, listed["rank"].to_numpy()[keep]] = arms.get_indexer(listed[ITEM_ID].to_numpy())[keep]
    return arms, lists


def _terms(draw, arms: pd.Index, explore: float, method: str, logged: LoggedSlates, rng: np.random.Generator,
           n_draws: int) -> SlateTerms:
    m, n_slots, n_rows = len(arms), logged.n_slots, len(logged.item)
    arm = arms.get_indexer(logged.item)
    unlogged = ~arms.isin(list(logged.logged_items))
    uniform_prefix = np.cumprod(1.0 / (m - np.arange(n_slots)))  # U_k for prefixes of length k + 1
    slot = {name: np.zeros(n_rows) for name in ("slot", "unsupported", "listed")}
    cascade = {"cascade": np.zeros(n_rows)} if logged.grouped else {}
    if logged.grouped:
        slate_arms = arms.get_indexer(logged.slate_items.ravel()).reshape(logged.slate_items.shape)
        valid_prefix = _valid_prefixes(slate_arms)
    keep = 1.0 - explore
    chunk = max(1, CHUNK_CELLS // max(n_draws * n_slots, 1))
    n_contexts = len(logged.context_ids)
    for start in range(0, n_contexts, chunk):
        stop = min(start + chunk, n_contexts)
        lists = draw(start, stop, rng)  # (contexts, draws, slots) arm positions
        rows = np.flatnonzero((logged.context >= start) & (logged.context < stop))
        local, k = logged.context[rows] - start, logged.slot[rows]
        at_slot = lists[local, :, k]  # (rows, draws)
        has_list = lists.shape[1] > 0
        hit = (at_slot == arm[rows, None]) & (at_slot >= 0)  # -1: no list, or an item the policy cannot rank
        slot["slot"][rows] = keep * (hit.mean(axis=1) if has_list else 0.0) + explore * (arm[rows] >= 0) / m
        listed = (lists[local] == arm[rows, None, None]).any(axis=2) & (arm[rows, None] >= 0)
        slot["listed"][rows] = keep * (listed.mean(axis=1) if has_list else 0.0) \
            + explore * (arm[rows] >= 0) * n_slots / m
        slot["unsupported"][rows] = keep * (np.where(at_slot >= 0, unlogged[at_slot], False).mean(axis=1)
                                            if has_list else 0.0) + explore * unlogged.mean()
        if logged.grouped:
            slate = logged.slate[rows]
            match = np.cumprod((lists[local] == slate_arms[slate][:, None, :]) & (lists[local] >= 0), axis=2)
            shares = match[np.arange(len(rows)), :, k].mean(axis=1) if has_list else 0.0
            cascade["cascade"][rows] = keep * shares + explore * uniform_prefix[k] * valid_prefix[slate, k]
    terms = SlateTerms(slot["slot"], slot["unsupported"], slot["listed"], method, **cascade)
    if logged.grouped:  # the whole slate is the prefix that ends at the last slot
        last = logged.slot == n_slots - 1
        whole = np.zeros(logged.slate.max() + 1)
        whole[logged.slate[last]] = terms.cascade[last]
        terms.slate = whole[logged.slate]
    return terms


def _valid_prefixes(slate_arms: np.ndarray) -> np.ndarray:
    """(impressions, slots): whether the logged prefix up to each slot has distinct known arms (a uniform list
    can show it)."""
    n, n_slots = slate_arms.shape
    valid = np.ones((n, n_slots), dtype=bool)
    for k in range(n_slots):
        known = slate_arms[:, k] >= 0
        repeated = (slate_arms[:, :k] == slate_arms[:, [k]]).any(axis=1) if k else np.zeros(n, dtype=bool)
        valid[:, k] = known & ~repeated & (valid[:, k - 1] if k else True)
    return valid
