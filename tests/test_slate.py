"""Slate estimators: brute-force formulas on a hand-made log, exact expectations over every slate of a small world,
the policy's slot/prefix/slate probabilities, and the checks of a slate log."""

from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import OffPolicyConfig
from pipeline.offpolicy import SLATE_ESTIMATORS, LoggedSlates, slate_estimates, slate_target_terms
from pipeline.data.synthetic_slates import plackett_luce_marginals
from pipeline.offpolicy.slate import SlateTerms, slate_feedback
from pipeline.scoring import RandomScorer, ScoringInput

SETTINGS = OffPolicyConfig()


# ------------------------------------------------------------------------- a hand-made log, brute force
def hand_made_slates() -> tuple[LoggedSlates, SlateTerms]:
    """Three impressions of two slots (rows in slot order), propensities and the policy's probabilities by hand."""
    logged = LoggedSlates(
        context=np.array([0, 0, 1, 1, 2, 2]), context_ids=np.array([10, 11, 12]),
        item=np.array(["a", "b", "c", "a", "b", "c"], dtype=object), slot=np.array([0, 1, 0, 1, 0, 1]),
        reward=np.array([1.0, 0, 0, 1, 1, 1]), propensity=np.array([0.25, 0.2, 0.25, 0.3, 0.2, 0.25]),
        n_slots=2, logged_items={"a", "b", "c"}, slate=np.array([0, 0, 1, 1, 2, 2]),
        slate_items=np.array([["a", "b"], ["c", "a"], ["b", "c"]], dtype=object),
        slate_propensity=np.array([0.2, 0.2, 0.1, 0.1, 0.08, 0.08]),
        cascade_propensity=np.array([0.25, 0.2, 0.25, 0.1, 0.2, 0.08]))
    terms = SlateTerms(slot=np.array([1.0, 0.5, 0.0, 0.5, 0.5, 1.0]),
                       unsupported=np.zeros(6), listed=np.array([1.0, 1.0, 0.5, 0.5, 1.0, 1.0]), method="by hand",
                       cascade=np.array([1.0, 0.5, 0.0, 0.0, 0.5, 0.5]),
                       slate=np.array([0.5, 0.5, 0.0, 0.0, 0.5, 0.5]))
    return logged, terms


def brute_force(name: str, logged: LoggedSlates, terms: SlateTerms) -> float:
    """Each estimator as a loop over impressions i and slots k (the docstring of slate.py)."""
    impressions = {}
    for row in range(len(logged.item)):
        impressions.setdefault(logged.slate[row], {})[logged.slot[row]] = row
    n, L = len(impressions), logged.n_slots
    base = name.removeprefix("SN-")

    def weight(rows: dict, k: int) -> float:
        row = rows[k]
        if base == "SIPS":
            return terms.slate[row] / logged.slate_propensity[row]
        if base == "IIPS":
            return terms.slot[row] / logged.propensity[row]
        if base == "RIPS":
            return terms.cascade[row] / logged.cascade_propensity[row]
        m = 4  # PI: uniform logging over m = 1 / median(p) items, Gamma v = q solved by hand
        at_slot = sum(terms.slot[r] for r in rows.values())
        listed = sum(terms.listed[r] for r in rows.values())
        return (m - 1) * at_slot + (m - 1) / (m - L) * listed - (L - 1) * m / (m - L)

    value = 0.0
    for k in range(L):
        numerator = sum(weight(rows, k) * logged.reward[rows[k]] for rows in impressions.values())
        denominator = sum(weight(rows, k) for rows in impressions.values()) if name.startswith("SN-") else n
        value += numerator / denominator / L
    return value


@pytest.mark.parametrize("name", list(SLATE_ESTIMATORS))
def test_each_slate_estimator_equals_its_formula_on_a_hand_made_log(name):
    logged, terms = hand_made_slates()
    estimator = SLATE_ESTIMATORS[name]
    value = estimator().estimate(slate_feedback(estimator, logged, terms))
    # By hand for IIPS: slot 1 weights 4, 0, 2.5 with clicks 1, 0, 1 -> 6.5 / 3; slot 2 weights 2.5, 5/3, 4 with
    # clicks 0, 1, 1 -> (5/3 + 4) / 3; the mean over the slots.  SIPS: weights 2.5, 0, 6.25 -> clicks 1, 1 + 1.
    expected = {"IIPS": (6.5 / 3 + (5 / 3 + 4) / 3) / 2, "SIPS": (2.5 / 3 + 12.5 / 3) / 2}
    if name in expected:
        assert value == pytest.approx(expected[name], rel=1e-12)
    assert value == pytest.approx(brute_force(name, logged, terms), rel=1e-12)


def test_pseudoinverse_weights_can_be_negative_and_pi_needs_uniform_logging():
    logged, terms = hand_made_slates()
    weights = slate_feedback(SLATE_ESTIMATORS["PI"], logged, terms).weight
    # m = 1 / median(p) = 4; impression 2: sum of pi at its slots 0.5, of pi in the list 1.0: 1.5 + 1.5 - 2
    assert weights[2] == pytest.approx(1.0)
    terms.slot[:2], terms.listed[:2] = 0.0, 0.0  # impression 1 outside the policy's lists: W = 0 + 0 - 2
    assert slate_feedback(SLATE_ESTIMATORS["PI"], logged, terms).weight[:2] == pytest.approx([-2.0, -2.0])
    rows, _ = slate_estimates(terms, logged, SETTINGS, None, "P", 0)
    assert "PI" not in set(rows["estimator"])  # these propensities vary: PI's closed form does not hold
    assert set(rows["k"]) == {2} and set(rows["estimator"]) == set(SLATE_ESTIMATORS) - {"PI"}
    assert ((rows["low"] >= 0) & (rows["high"] <= 1)).all()
    logged.propensity = np.full(6, 0.25)
    rows, _ = slate_estimates(terms, logged, SETTINGS, None, "P", 0)
    assert "PI" in set(rows["estimator"])


# ------------------------------------------------------------------------- exact expectations in a small world
ITEMS = ["a", "b", "c", "d"]
ATTRACTION = {"a": 0.3, "b": 0.6, "c": 0.1, "d": 0.45}
EXAMINATION = [1.0, 0.5]  # position-based clicks: P(click at slot k) = EXAMINATION[k] * ATTRACTION[item]


def plackett_luce(weights: dict) -> dict:
    """Every ordered 2-item slate's probability when items are drawn one by one in proportion to ``weights``."""
    total = sum(weights.values())
    return {(a, b): weights[a] / total * weights[b] / (total - weights[a]) for a, b in permutations(weights, 2)}


def world_log(logger: dict) -> tuple[LoggedSlates, np.ndarray]:
    """All 12 slates of one context as impressions, each slot's *expected* click as its reward, and each
    impression's logging probability (to weight the column sums: an exact expectation, not a sample)."""
    slates = list(logger)
    marginal = {(item, k): sum(p for s, p in logger.items() if s[k] == item) for item in ITEMS for k in range(2)}
    rows = [(i, k, s[k]) for i, s in enumerate(slates) for k in range(2)]
    logged = LoggedSlates(
        context=np.zeros(len(rows), dtype=int), context_ids=np.array([0]),
        item=np.array([item for _, _, item in rows], dtype=object), slot=np.array([k for _, k, _ in rows]),
        reward=np.array([EXAMINATION[k] * ATTRACTION[item] for _, k, item in rows]),
        propensity=np.array([marginal[(item, k)] for _, k, item in rows]), n_slots=2, logged_items=set(ITEMS),
        slate=np.array([i for i, _, _ in rows]), slate_items=np.array(slates, dtype=object),
        slate_propensity=np.array([logger[slates[i]] for i, _, _ in rows]),
        cascade_propensity=np.array([marginal[(item, 0)] if k == 0 else logger[slates[i]] for i, k, item in rows]))
    return logged, np.array([logger[slates[i]] for i, _, _ in rows])


def expectation(name: str, logged: LoggedSlates, terms: SlateTerms, probability: np.ndarray) -> float:
    estimator = SLATE_ESTIMATORS[name]
    columns = estimator().columns(slate_feedback(estimator, logged, terms))
    return float(estimator.combine((columns * probability[:, None]).sum(axis=0)))


@pytest.mark.parametrize("logging", ["uniform", "plackett-luce"])
def test_estimators_are_unbiased_exactly_over_every_slate(logging):
    logger = plackett_luce({"a": 1, "b": 1, "c": 1, "d": 1} if logging == "uniform"
                           else {"a": 4, "b": 1, "c": 2, "d": 0.5})
    logged, probability = world_log(logger)
    target = ["d", "b"]  # a deterministic policy's list; its true value per slot, by the click model:
    truth = (EXAMINATION[0] * ATTRACTION["d"] + EXAMINATION[1] * ATTRACTION["b"]) / 2
    recommendations = pd.DataFrame({"context_id": 0, "item_id": target, "rank": [0, 1]})
    terms = slate_target_terms(recommendations, None, None, logged, samples=1, seed=0)
    for name in ("SIPS", "IIPS", "RIPS"):  # unbiased under any logging with support
        assert expectation(name, logged, terms, probability) == pytest.approx(truth, rel=1e-12), name
    pi = expectation("PI", logged, terms, probability)
    if logging == "uniform":  # PI's closed form is exact for uniform logging without replacement
        assert pi == pytest.approx(truth, rel=1e-12)
        # ... and the often-quoted sum_k w_k - (L - 1), exact for slot-independent logging, is not
        naive = np.bincount(logged.slate, weights=terms.slot / logged.propensity)[logged.slate] - 1
        assert abs(float((naive * logged.reward * probability).sum()) / 2 - truth) > 0.01
    else:
        assert abs(pi - truth) > 1e-3  # and biased otherwise (its rows are flagged)


# ------------------------------------------------------------------------- the policy's probabilities
def single_context_log(slates: list[tuple[str, str]]) -> LoggedSlates:
    rows = [(i, k, s[k]) for i, s in enumerate(slates) for k in range(2)]
    n = len(rows)
    return LoggedSlates(np.zeros(n, dtype=int), np.array([0]), np.array([r[2] for r in rows], dtype=object),
                        np.array([r[1] for r in rows]), np.zeros(n), np.full(n, 0.25), 2, set(ITEMS),
                        np.array([r[0] for r in rows]), np.array(slates, dtype=object), np.full(n, 1 / 12),
                        np.array([0.25 if r[1] == 0 else 1 / 12 for r in rows]))


def test_random_policy_probabilities_are_those_of_a_uniform_list():
    logged = single_context_log([("a", "b"), ("c", "a")])
    terms = slate_target_terms(None, RandomScorer(ITEMS), ScoringInput(np.array([0]), np.zeros((1, 0))), logged, 7, 0)
    assert terms.slot == pytest.approx(np.full(4, 1 / 4))
    assert terms.cascade == pytest.approx([1 / 4, 1 / 12, 1 / 4, 1 / 12])
    assert terms.slate == pytest.approx(np.full(4, 1 / 12))


class TwoListScorer:
    """A sampling policy whose list is (a, b) or (b, c) with equal probability (known exactly)."""

    arms = ITEMS

    def expectations(self, contexts, rng):
        first = rng.random(len(contexts)) < 0.5
        return np.where(first[:, None], [[4.0, 3, 1, 0]], [[1.0, 4, 3, 0]])


def test_monte_carlo_probabilities_of_a_sampling_policy():
    logged = single_context_log([("a", "b"), ("b", "c"), ("b", "a")])
    terms = slate_target_terms(None, TwoListScorer(), ScoringInput(np.array([0]), np.zeros((1, 0))), logged,
                               samples=4000, seed=3)
    # slot 1 shows a or b half the time each; slot 2 b or c; slates (a, b) and (b, c) half each, (b, a) never
    assert terms.slot == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5, 0.0], abs=0.03)
    assert terms.slate == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.0, 0.0], abs=0.03)
    assert terms.cascade == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.5, 0.0], abs=0.03)


def test_plackett_luce_marginals_equal_enumeration_of_every_slate():
    p = np.array([[0.4, 0.1, 0.2, 0.25, 0.05], [0.2] * 5])
    marginals = plackett_luce_marginals(p, 3)
    for row in range(2):
        weights = dict(enumerate(p[row]))
        expected = np.zeros((3, 5))
        for slate in permutations(range(5), 3):
            probability, left = 1.0, 1.0
            for item in slate:
                probability *= weights[item] / left
                left -= weights[item]
            for k, item in enumerate(slate):
                expected[k, item] += probability
        assert marginals[row] == pytest.approx(expected, rel=1e-12)


def test_self_normalised_intervals_reach_at_least_as_far_as_the_unnormalised_ones():
    logged, terms = hand_made_slates()
    rows, _ = slate_estimates(terms, logged, SETTINGS, None, "P", 0)
    rows = rows.set_index("estimator")
    for name in ("IIPS", "SIPS", "RIPS"):
        assert rows.loc[f"SN-{name}", "low"] <= rows.loc[name, "low"]
        assert rows.loc[f"SN-{name}", "high"] >= rows.loc[name, "high"]
