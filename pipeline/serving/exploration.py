"""Exploration when serving, and the probability of what was shown: what makes a served log evaluable.

Off-policy estimates of a candidate policy weight each logged event by ``pi_candidate / pi_logging``; they
exist only where the logging policy gave the candidate's choices a chance (overlap).  A policy that never
randomises (LinUCB, greedy LinGreedy) shows one list per context with probability 1: its log can evaluate only
candidates that choose the same lists, so it cannot tell you whether the next policy is better.  Serving with
``epsilon`` shows, with probability ``epsilon``, a uniformly random list of ``k`` distinct items instead of
the policy's list, which gives every item at every position probability at least ``epsilon / n_items``.

For a shown list ``s`` of length ``k`` from ``n`` items and the policy's list ``t`` (deterministic policies):

- item-position:  ``P(s_j at j) = (1 - eps) 1[t_j = s_j] + eps / n``
- whole list:     ``P(s)        = (1 - eps) 1[t = s] + eps / (n (n-1) ... (n-k+1))``
- cascade (prefix up to ``j``): ``(1 - eps) 1[t_1..j = s_1..j] + eps / (n (n-1) ... (n-j+1))``

These are the ``propensity``, ``slate_propensity`` and ``cascade_propensity`` columns of a slate log (README,
"Slate logs").  A sampling policy (LinTS) has no closed form: its indicators are replaced by their frequencies
over ``draws`` lists drawn from the same posterior, the served one included (so no shown item gets 0).
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def falling_factorials(n: int, k: int) -> np.ndarray:
    """``n (n-1) ... (n-j+1)`` for ``j = 1..k``: the number of ordered lists of ``j`` distinct items (read-only:
    cached, since a replica asks for the same ``n``, ``k`` on every request)."""
    values = np.cumprod(np.arange(n, n - k, -1, dtype=float))
    values.flags.writeable = False
    return values


def explore(policy_lists: np.ndarray, n_items: int, epsilon: float,
            rng: np.random.Generator) -> tuple[np.ndarray, dict[str, list[float] | float]]:
    """The list to show and its propensities.

    ``policy_lists``: (draws, k) item positions; row 0 is the policy's list for this request, the other rows
    (sampling policies only) further draws from the same distribution.  Returns the shown positions and
    ``{"position": [...], "cascade": [...], "slate": p}``.
    """
    k = policy_lists.shape[1]
    shown = rng.choice(n_items, size=k, replace=False) if epsilon > 0 and rng.random() < epsilon else policy_lists[0]
    matches = policy_lists == shown
    if len(policy_lists) == 1:  # a deterministic policy: the frequencies are the indicators themselves
        position_share, prefix_share = matches[0], np.logical_and.accumulate(matches[0])
    else:
        position_share, prefix_share = matches.mean(axis=0), np.logical_and.accumulate(matches, axis=1).mean(axis=0)
    position = (1 - epsilon) * position_share + epsilon / n_items
    cascade = (1 - epsilon) * prefix_share + epsilon / falling_factorials(n_items, k)
    return shown, {"position": position.tolist(), "cascade": cascade.tolist(), "slate": float(cascade[-1])}
