"""The fast engine against MABWiser/Mab2Rec: the same lists for deterministic policies, the same distribution
for sampling ones (chi-square tests with fixed seeds, so they are not flaky), the same trained models."""

import numpy as np
import pandas as pd
import pytest
from mab2rec import BanditRecommender
from mab2rec.pipeline import train
from mabwiser.mab import LearningPolicy, NeighborhoodPolicy
from scipy.stats import chi2_contingency

from pipeline import scoring
from pipeline.evaluation import fit_in_batches
from pipeline.features import FoldFeatures
from pipeline.policies import PolicySpec
from pipeline.scoring import LinearScorer, ScoringInput, recommend_all, scorer_for

N_ARMS, DIM = 6, 4


def logged(seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    contexts = rng.normal(size=(n, DIM))
    arms = rng.integers(N_ARMS, size=n)
    weights = rng.normal(size=(N_ARMS, DIM)) * 0.5
    clicks = (rng.random(n) < 1 / (1 + np.exp(1.5 - (contexts * weights[arms]).sum(1)))).astype(int)
    return arms, clicks, contexts


def trained(policy, neighborhood=None, seed: int = 5, extra_arms=()) -> BanditRecommender:
    arms, clicks, contexts = logged(1)
    recommender = BanditRecommender(policy, neighborhood, top_k=3, seed=seed)
    contextual = neighborhood is not None or isinstance(policy, (LearningPolicy.LinUCB, LearningPolicy.LinTS,
                                                                 LearningPolicy.LinGreedy))
    recommender.fit(arms, clicks, contexts if contextual else None)
    for arm in extra_arms:
        recommender.add_arm(arm)
    return recommender


def ours(recommender, contexts: np.ndarray, k: int = 3, seed: int = 11) -> np.ndarray:
    width = contexts.shape[1] if recommender.mab.is_contextual else 0
    inputs = ScoringInput(np.arange(len(contexts)), contexts[:, :width])
    lists = recommend_all(scorer_for(recommender), inputs, k, seed)
    return lists, lists["item_id"].to_numpy().reshape(len(contexts), k)


@pytest.mark.parametrize("policy", [LearningPolicy.LinUCB(alpha=1.5), LearningPolicy.LinGreedy(epsilon=0.0)])
def test_deterministic_policies_give_mab2rec_lists_and_scores(policy):
    recommender = trained(policy)
    contexts = np.random.default_rng(2).normal(size=(500, DIM))
    items, scores = recommender.recommend(contexts, return_scores=True)
    lists, _ = ours(recommender, contexts)
    assert lists["item_id"].tolist() == [item for row in items for item in row]
    np.testing.assert_allclose(lists["score"], np.concatenate(scores), rtol=1e-12)


def test_ties_break_as_in_mab2rec():
    # Arms added after training have identical models, hence tied expectations in every row.
    recommender = trained(LearningPolicy.LinUCB(alpha=1.0), extra_arms=[10, 11, 12, 13])
    recommender.top_k = 5
    contexts = np.random.default_rng(3).normal(size=(300, DIM))
    items = recommender.recommend(contexts)
    _, mine = ours(recommender, contexts, k=5)
    assert mine.tolist() == items


def test_chunking_does_not_change_the_lists(monkeypatch):
    recommender = trained(LearningPolicy.LinUCB(alpha=1.0))
    contexts = np.random.default_rng(4).normal(size=(101, DIM))
    whole, _ = ours(recommender, contexts)
    monkeypatch.setattr(scoring, "CELLS_PER_CHUNK", 7 * N_ARMS)  # 7 contexts per chunk
    pd.testing.assert_frame_equal(ours(recommender, contexts)[0], whole)


SAMPLING = {
    "Random": (LearningPolicy.Random(), None),
    "Popularity": (LearningPolicy.Popularity(), None),
    "ThompsonSampling": (LearningPolicy.ThompsonSampling(), None),
    "LinTS": (LearningPolicy.LinTS(alpha=1.0), None),
    "LinGreedy-epsilon": (LearningPolicy.LinGreedy(epsilon=0.3), None),
    "ClustersTS": (LearningPolicy.ThompsonSampling(), NeighborhoodPolicy.Clusters(3)),
}


def rank_counts(lists: np.ndarray, rank: int) -> np.ndarray:
    return np.bincount(lists[:, rank].astype(int), minlength=N_ARMS)


def same_distribution_p(reference: np.ndarray, candidate: np.ndarray, rank: int) -> float:
    table = np.stack([rank_counts(reference, rank), rank_counts(candidate, rank)])
    table = table[:, table.sum(axis=0) > 0]
    return 1.0 if table.shape[1] < 2 else chi2_contingency(table)[1]


@pytest.mark.parametrize("name", list(SAMPLING))
def test_sampling_policies_draw_lists_from_mab2recs_distribution(name):
    policy, neighborhood = SAMPLING[name]
    recommender = trained(policy, neighborhood)
    draws = 3000
    for context in np.random.default_rng(6).normal(size=(3, DIM)):
        repeated = np.repeat(context[None], draws, axis=0)
        reference = np.array(recommender.recommend(repeated if recommender.mab.is_contextual else [[]] * draws))
        _, mine = ours(recommender, repeated)
        for rank in range(3):  # nine tests per policy: Bonferroni at 1e-3 overall
            assert same_distribution_p(reference, mine, rank) > 1e-3 / 9, (name, rank)


def test_the_distribution_check_rejects_independent_lints_draws():
    """MABWiser's LinTS shares one normal draw across the arms of a context; independent draws (the textbook
    version) give visibly different lists, which the check above must catch."""
    recommender = trained(LearningPolicy.LinTS(alpha=1.0))
    scorer = LinearScorer.from_recommender(recommender)
    context = np.random.default_rng(6).normal(size=(1, DIM))
    repeated = np.repeat(context, 3000, axis=0)
    reference = np.array(recommender.recommend(repeated))
    inverses = np.stack([recommender.mab._imp.arm_to_model[arm].A_inv for arm in scorer.arms])
    spread = np.sqrt(np.einsum("d,ade,e->a", context[0], inverses, context[0]))
    draws = scorer.scores(repeated) + spread * np.random.default_rng(0).standard_normal((3000, N_ARMS))
    independent = np.asarray(scorer.arms)[np.argsort(-draws, axis=1)[:, :3]]
    assert min(same_distribution_p(reference, independent, rank) for rank in range(3)) < 1e-6


def fold(arms, clicks, contexts) -> FoldFeatures:
    ids = np.arange(len(arms))
    table = pd.concat([pd.DataFrame({"context_id": ids}), pd.DataFrame(contexts, columns=[f"x{i}" for i in range(DIM)])],
                      axis=1)
    rows = pd.DataFrame({"context_id": ids, "item_id": arms, "response": clicks})
    return FoldFeatures(table, rows, rows.assign(event_id=ids), None)


@pytest.mark.parametrize("policy, neighborhood", [(LearningPolicy.LinUCB(alpha=1.0), None),
                                                  (LearningPolicy.ThompsonSampling(), NeighborhoodPolicy.Clusters(3))])
def test_batched_fit_gives_mab2recs_trained_model(policy, neighborhood):
    features = fold(*logged(8, n=2500))
    spec = PolicySpec("p", policy, neighborhood)
    reference = BanditRecommender(policy, neighborhood, top_k=3, seed=5)
    train(reference, features.train, user_features=features.contexts, user_id_col="context_id", batch_size=1000)
    mine = BanditRecommender(policy, neighborhood, top_k=3, seed=5)
    fit_in_batches(mine, spec, features, batch_size=1000)
    assert list(mine.mab.arms) == list(reference.mab.arms)
    if neighborhood is None:
        for arm in mine.mab.arms:
            np.testing.assert_array_equal(mine.mab._imp.arm_to_model[arm].A, reference.mab._imp.arm_to_model[arm].A)
            np.testing.assert_array_equal(mine.mab._imp.arm_to_model[arm].beta,
                                          reference.mab._imp.arm_to_model[arm].beta)
    else:  # one fit on all rows = Mab2Rec's three batches (Clusters refits on everything seen each time)
        np.testing.assert_array_equal(mine.mab._imp.kmeans.cluster_centers_,
                                      reference.mab._imp.kmeans.cluster_centers_)
        for mine_lp, reference_lp in zip(mine.mab._imp.lp_list, reference.mab._imp.lp_list):
            assert mine_lp.arm_to_success_count == reference_lp.arm_to_success_count
            assert mine_lp.arm_to_fail_count == reference_lp.arm_to_fail_count


def test_policies_without_a_fast_scorer_keep_mab2recs_path():
    recommender = trained(LearningPolicy.Softmax(tau=1.0))
    assert scorer_for(recommender) is None
    assert scorer_for(trained(LearningPolicy.LinUCB(alpha=1.0, scale=True))) is None
