"""Replay with learning: identical to MABWiser's own per-event replay for deterministic policies, and unbiased
under non-uniform logging thanks to rejection sampling."""

import numpy as np
import pytest
from mab2rec import BanditRecommender
from mabwiser.mab import LearningPolicy

from pipeline.replay import replay_per_event, replay_with_learning


def toy_log(rng, n, n_items=20, d=4, propensities=None):
    theta = np.random.default_rng(99).normal(size=(n_items, d))  # one fixed world for every log
    contexts = rng.normal(size=(n, d))
    if propensities is None:
        items = rng.integers(n_items, size=n)
        propensity = np.full(n, 1 / n_items)
    else:
        items = rng.choice(n_items, size=n, p=propensities)
        propensity = propensities[items]
    truth = 1 / (1 + np.exp(-(contexts * theta[items]).sum(axis=1) + 1))
    return contexts, items, (rng.random(n) < truth).astype(int), propensity


@pytest.mark.parametrize("policy", [LearningPolicy.LinUCB(alpha=1.0), LearningPolicy.LinGreedy(epsilon=0.0)],
                         ids=["LinUCB", "LinGreedy"])
def test_deterministic_policies_replay_exactly_as_mabwiser_per_event(policy):
    rng = np.random.default_rng(0)
    train, test = toy_log(rng, 1000), toy_log(rng, 6000)
    recommender = BanditRecommender(policy, top_k=3, seed=1, n_jobs=1)
    recommender.set_arms(list(range(20)))
    recommender.fit(train[1], train[2], train[0])
    before = recommender.mab._imp.arm_to_model[0].A.copy()
    fast = replay_with_learning(recommender, *test, batch_size=20, seed=0, contextual=True)
    slow = replay_per_event(recommender, *test, batch_size=20, seed=0, contextual=True)
    assert len(fast) > 5 and fast.equals(slow)
    assert fast["accepted"].is_monotonic_increasing and (fast["accepted"].diff().dropna() <= 20).all()
    np.testing.assert_array_equal(recommender.mab._imp.arm_to_model[0].A, before)  # the caller's model: unchanged


def test_rejection_sampling_makes_non_uniform_logs_unbiased():
    """Random's choices on a log that favours item 0 (p = 0.6): matches alone would be item 0 six times in ten and
    their CTR that of item 0; accepted with p_min / p they are uniform, and the CTR is the uniform policy's,
    computed here from the same log's per-item click rates."""
    rng = np.random.default_rng(1)
    propensities = np.r_[0.6, np.full(19, 0.4 / 19)]
    contexts, items, rewards, propensity = toy_log(rng, 200_000, propensities=propensities)
    recommender = BanditRecommender(LearningPolicy.Random(), top_k=3, seed=1, n_jobs=1)
    recommender.set_arms(list(range(20)))
    recommender.fit(items[:10], rewards[:10])
    curve = replay_with_learning(recommender, contexts, items, rewards, propensity, batch_size=500, seed=0,
                                 contextual=False)
    per_item = np.array([rewards[items == item].mean() for item in range(20)])
    final = curve.iloc[-1]
    assert final["low"] <= per_item.mean() <= final["high"]
    naive = propensities @ per_item  # accepting every match: items weighted by how often the logger showed them
    assert not final["low"] <= naive <= final["high"]


def test_a_policy_never_credited_says_so():
    """A log whose items the policy never picks: one row, 0 accepted events, CTR unknown, interval [0, 1]."""
    rng = np.random.default_rng(2)
    contexts, items, rewards, propensity = toy_log(rng, 500)
    recommender = BanditRecommender(LearningPolicy.Random(), top_k=1, seed=1, n_jobs=1)
    recommender.set_arms([100, 101])  # arms the log never shows
    recommender.fit([100, 101], [0, 1])
    curve = replay_with_learning(recommender, contexts, items, rewards, propensity, 10, 0, contextual=False)
    assert len(curve) == 1 and curve.iloc[0]["accepted"] == 0 and np.isnan(curve.iloc[0]["ctr"])
    assert (curve.iloc[0]["low"], curve.iloc[0]["high"], curve.iloc[0]["events_seen"]) == (0.0, 1.0, 500)
