"""Replay with learning: each policy walks the test log in time order and learns from the events it is credited
with, so its online learning curve is estimated from logged data (``evaluation.replay``).

For each logged event ``e`` (context ``x_e``, item ``a_e``, propensity ``p_e``, reward ``r_e``), the policy, as
trained so far, picks its first item; the event is **accepted** when that item is ``a_e`` and, under
non-uniform logging, a uniform draw is below ``p_min / p_e`` (rejection sampling, Dudik et al. 2012; with
uniform logging every match is accepted, Li et al. 2011).  Accepted events are distributed as if the policy
had chosen on a fresh stream, so the running click rate of the accepted events estimates the policy's online
click rate after as many of its own steps.  The policy is updated (``partial_fit``) every ``batch_size``
accepted events.

Speed: between two updates the policy does not change, so the events up to the next update are scored in one
matrix product by the fast scorers (``pipeline.scoring``) instead of one MABWiser ``predict`` call per event;
``replay_per_event`` is that slow reference (MABWiser's own ``predict``/``partial_fit``), used where no fast
scorer exists and by the tests and bench, which check that deterministic policies give identical results.
A policy's first item is ``argmax`` of its expectations (first maximum on ties), as MABWiser's ``predict``.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from pipeline.scoring import CELLS_PER_CHUNK, scorer_for
from pipeline.uncertainty import wilson

REPLAY_COLUMNS = ["policy", "fold", "accepted", "events_seen", "clicks", "ctr", "low", "high"]


def _acceptance_threshold(propensity: np.ndarray) -> np.ndarray:
    """``p_min / p_e``: 1 everywhere under uniform logging."""
    return propensity.min() / propensity


def replay_with_learning(recommender, contexts: np.ndarray, items: np.ndarray, rewards: np.ndarray,
                         propensity: np.ndarray, batch_size: int, seed: int, contextual: bool) -> pd.DataFrame:
    """The accepted-event curve of one policy (a copy of ``recommender`` learns; the original is untouched).

    Arrays are aligned by event in time order.  Returns one row per update: accepted events so far, events
    walked, clicks, and the running CTR with its Wilson interval."""
    recommender = copy.deepcopy(recommender)
    rng = np.random.default_rng([seed, 23])
    threshold = _acceptance_threshold(propensity)
    accept_draws = rng.random(len(items))  # one per event, drawn up front: independent of the batching
    scorer = scorer_for(recommender)
    if scorer is None:
        return replay_per_event(recommender, contexts, items, rewards, propensity, batch_size, seed, contextual,
                                copied=True)
    arm_index = {arm: i for i, arm in enumerate(scorer.arms)}
    logged_arm = np.array([arm_index.get(item, -1) for item in items])
    curve, pending, position, clicks, accepted, rate = [], [], 0, 0, 0, 1.0
    while position < len(items):
        # Score enough upcoming events to expect the rest of the batch (never fewer than 256) with the current
        # model; events after the one that completes the batch are scored again after the update.
        needed = batch_size - len(pending)
        width = int(min(len(items) - position, max(256, 1.5 * needed / rate),
                        max(1, CELLS_PER_CHUNK // len(scorer.arms))))  # bounded memory: (events x arms) cells
        block = slice(position, position + width)
        matrix = contexts[block] if contextual else np.zeros((width, 0))
        choice = np.argmax(scorer.expectations(matrix, rng), axis=1)
        hit = (choice == logged_arm[block]) & (accept_draws[block] < threshold[block])
        cumulative = np.cumsum(hit)
        stop = int(np.searchsorted(cumulative, needed)) + 1 if cumulative[-1] >= needed else width
        pending += (np.flatnonzero(hit[:stop]) + position).tolist()
        rate = max(float(hit[:stop].mean()), 1e-4)
        position += stop
        if pending and (len(pending) == batch_size or position == len(items)):
            taken = np.array(pending)
            accepted += len(taken)
            clicks += int(rewards[taken].sum())
            recommender.partial_fit(items[taken], rewards[taken], contexts[taken] if contextual else None)
            scorer = scorer_for(recommender)
            curve.append(_point(accepted, position, clicks))
            pending = []
    return _frame(curve, len(items))


def replay_per_event(recommender, contexts: np.ndarray, items: np.ndarray, rewards: np.ndarray,
                     propensity: np.ndarray, batch_size: int, seed: int, contextual: bool,
                     copied: bool = False) -> pd.DataFrame:
    """The reference: MABWiser's own ``predict`` for every event, ``partial_fit`` every ``batch_size`` accepted
    events.  Deterministic policies give exactly ``replay_with_learning``'s curve."""
    recommender = recommender if copied else copy.deepcopy(recommender)
    rng = np.random.default_rng([seed, 23])
    threshold = _acceptance_threshold(propensity)
    accept_draws = rng.random(len(items))
    curve, pending, clicks, accepted = [], [], 0, 0
    for event in range(len(items)):
        choice = recommender.mab.predict(contexts[event:event + 1] if contextual else None)
        choice = choice[0] if isinstance(choice, list) else choice
        if choice == items[event] and accept_draws[event] < threshold[event]:
            pending.append(event)
        if pending and (len(pending) == batch_size or event == len(items) - 1):
            taken = np.array(pending)
            accepted += len(taken)
            clicks += int(rewards[taken].sum())
            recommender.partial_fit(items[taken], rewards[taken], contexts[taken] if contextual else None)
            curve.append(_point(accepted, event + 1, clicks))
            pending = []
    return _frame(curve, len(items))


def _frame(curve: list, n_events: int) -> pd.DataFrame:
    """The curve; a policy never credited with an event gets one row saying so (CTR unknown, interval [0, 1])."""
    return pd.DataFrame(curve or [(0, n_events, 0, np.nan, 0.0, 1.0)], columns=REPLAY_COLUMNS[2:])


def _point(accepted: int, seen: int, clicks: int) -> tuple:
    low, high = wilson(clicks, accepted)
    return accepted, seen, clicks, clicks / accepted, low, high
