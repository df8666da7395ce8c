"""The evaluated policy's action probabilities at the logged items: what every estimator weights by.

Two estimands per policy (README, "Off-policy estimands"):

- the value of its **first item**: ``V_1 = E_x sum_a pi_1(a | x) r(x, a)``, ``pi_1`` the probability that ``a``
  is the first item of its list;
- the value of its **top-k list** under the position-independent click model (an item's click probability
  does not depend on its slot or on the other items): the mean click rate of the list's items,
  ``V_k = E_x sum_a mu_k(a | x) r(x, a)`` with ``mu_k(a | x) = P(a in the top-k list | x) / k``, the
  probability that a uniformly chosen slot shows ``a``.  On synthetic data it is ``true_ctr@k``.

``mu_k`` is computed, not sampled once, wherever it can be (a single sampled list is an unbiased but noisy
stand-in: Random's estimate would rest on the ~1/n events whose item it happened to draw):

- deterministic policies (LinUCB, greedy LinGreedy, NeuralLinear's mean/UCB rules): their lists;
- Random: uniform over the arms; LinGreedy with ``epsilon``: ``(1 - eps) * greedy list + eps * uniform``;
- sampling policies (Thompson sampling, LinTS, Popularity, ClustersTS, NeuralLinear's TS rule): Monte Carlo
  over ``action_samples`` draws of the whole list per context, from the same fast scorer that ranks them;
- policies scored by Mab2Rec's own path (no fast scorer): the list they produced, one draw (``method`` says so).

Besides ``mu_k`` at the logged item, each event gets the direct-method term ``sum_a mu_k(a|x) r_hat(x, a)`` and
the share of ``mu_k`` on items the log never shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID
from pipeline.scoring import EngineScorer, LinearScorer, RandomScorer, ScoringInput, top_k

MONTE_CARLO_CELLS = 1_000_000_000  # contexts x arms x draws per policy; fewer draws beyond it (method says so)
CHUNK_CELLS = 2_000_000  # contexts x arms held at once


@dataclass
class TargetTerms:
    """Per test event (in the fold's test-row order) for one list length ``k``."""

    k: int
    probability: np.ndarray  # mu_k(a_e | x_e)
    direct: np.ndarray  # sum_a mu_k(a | x_e) r_hat(x_e, a)
    unsupported: np.ndarray  # sum of mu_k(a | x_e) over items the log never shows
    method: str


def scorer_kind(scorer) -> str:
    """How the policy's action probabilities are obtained: lists, uniform, epsilon or sampling."""
    if scorer is None:
        return "lists"
    if isinstance(scorer, RandomScorer):
        return "uniform"
    if isinstance(scorer, LinearScorer):
        if scorer.kind == "greedy":
            return "epsilon" if scorer.epsilon > 0 else "lists"
        return "lists" if scorer.is_deterministic else "sampling"
    if isinstance(scorer, EngineScorer):
        return "sampling" if getattr(scorer.engine.policy, "decision", "") == "ts" else "lists"
    return "sampling"  # Thompson sampling, Popularity, ClustersTS


def target_terms(recommendations: pd.DataFrame, scorer, inputs: ScoringInput, test: pd.DataFrame, ks: list[int],
                 reward_model, logged_items: set, samples: int, seed: int,
                 stochastic_without_scorer: bool = False) -> dict[int, TargetTerms]:
    """``TargetTerms`` for every ``k`` in ``ks`` (``test``: the fold's ``context_id, item_id`` test rows)."""
    kind = scorer_kind(scorer)
    if kind == "lists":
        method = "one sampled list" if stochastic_without_scorer else "its lists"
        return {k: _from_lists(recommendations, test, k, reward_model, logged_items, method) for k in ks}
    return _dense(scorer, kind, inputs, test, ks, reward_model, logged_items, samples, seed)


def _from_lists(recommendations: pd.DataFrame, test: pd.DataFrame, k: int, reward_model, logged_items: set,
                method: str) -> TargetTerms:
    listed = recommendations[recommendations["rank"] < k][[CONTEXT_ID, ITEM_ID]]
    length = listed.groupby(CONTEXT_ID, sort=False).size()
    shown = listed.assign(r_hat=reward_model.predict(listed[CONTEXT_ID], listed[ITEM_ID]),
                          unsupported=~listed[ITEM_ID].isin(logged_items))
    per_context = shown.groupby(CONTEXT_ID, sort=False)[["r_hat", "unsupported"]].mean()
    events = test[[CONTEXT_ID, ITEM_ID]].reset_index(drop=True)
    in_list = events.merge(listed.assign(hit=1.0), on=[CONTEXT_ID, ITEM_ID], how="left")["hit"].fillna(0.0).to_numpy()
    n = length.reindex(events[CONTEXT_ID]).to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        probability = np.where(n > 0, in_list / n, 0.0)  # a context without a list shows nothing
    context = per_context.reindex(events[CONTEXT_ID])
    return TargetTerms(k, probability, context["r_hat"].fillna(0.0).to_numpy(),
                       context["unsupported"].fillna(0.0).to_numpy(), method)


def _dense(scorer, kind: str, inputs: ScoringInput, test: pd.DataFrame, ks: list[int], reward_model,
           logged_items: set, samples: int, seed: int) -> dict[int, TargetTerms]:
    """``mu_k`` as a (contexts x arms) matrix, chunk by chunk, read at the logged items."""
    arms = np.asarray(scorer.arms, dtype=object)
    n_contexts, n_arms = len(inputs.context_ids), len(arms)
    if kind == "sampling":
        samples = int(max(1, min(samples, MONTE_CARLO_CELLS // max(n_contexts * n_arms, 1))))
    method = {"uniform": "uniform over the arms", "epsilon": "greedy list + epsilon x uniform",
              "sampling": f"Monte Carlo, {samples} draws per context"}[kind]
    event_row = pd.Index(inputs.context_ids).get_indexer(test[CONTEXT_ID].to_numpy())
    arm_of = pd.Index(arms).get_indexer(test[ITEM_ID].to_numpy())
    unlogged = ~np.isin(arms, np.asarray(list(logged_items), dtype=object))
    out = {k: {name: np.zeros(len(test)) for name in ("probability", "direct", "unsupported")}
           for k in ks}
    rng = np.random.default_rng([seed, 17])
    chunk = max(1, CHUNK_CELLS // max(n_arms, 1))
    for start in range(0, n_contexts, chunk):
        stop = min(start + chunk, n_contexts)
        matrix = inputs.matrix[start:stop]
        distributions = _distributions(scorer, kind, matrix, ks, samples, rng)
        r_hat = reward_model.predict_matrix(inputs.context_ids[start:stop], arms)
        events = np.flatnonzero((event_row >= start) & (event_row < stop))
        rows = event_row[events] - start
        for k, mu in distributions.items():
            logged = np.where(arm_of[events] >= 0, mu[rows, np.maximum(arm_of[events], 0)], 0.0)
            out[k]["probability"][events] = logged
            out[k]["direct"][events] = (mu * r_hat).sum(axis=1)[rows]
            out[k]["unsupported"][events] = mu[:, unlogged].sum(axis=1)[rows]
    return {k: TargetTerms(k, **values, method=method) for k, values in out.items()}


def _distributions(scorer, kind: str, matrix: np.ndarray, ks: list[int], samples: int,
                   rng: np.random.Generator) -> dict[int, np.ndarray]:
    n, n_arms = len(matrix), len(scorer.arms)
    if kind == "uniform":
        return {k: np.full((n, n_arms), 1.0 / n_arms) for k in ks}
    rows = np.arange(n)[:, None]
    if kind == "epsilon":
        width = min(max(ks), n_arms)
        greedy, _ = top_k(scorer.scores(matrix), width)
        out = {}
        for k in ks:
            mu = np.full((n, n_arms), scorer.epsilon / n_arms)
            mu[rows, greedy[:, :k]] += (1 - scorer.epsilon) / k
            out[k] = mu
        return out
    out = {k: np.zeros((n, n_arms)) for k in ks}
    for _ in range(samples):
        expectations = scorer.expectations(matrix, rng)
        for k in ks:  # only which k items lead matters here, not their order: argpartition, not a sort
            best = (np.argmax(expectations, axis=1)[:, None] if k == 1 else
                    np.argpartition(-expectations, min(k, n_arms) - 1, axis=1)[:, :k])
            out[k][rows, best] += 1.0 / (k * samples)  # the k items of a row are distinct
    return out
