"""Fast scoring: every arm of a chunk of contexts in one matrix, then Mab2Rec's top-k, without per-context dicts.

Mab2Rec's ``score`` asks MABWiser for one ``{arm: expectation}`` dict per context, turns the dicts back into a
matrix and sorts every row; that Python-level work grows with contexts x arms and dominates a benchmark
(20+ minutes at 1M events x 1,000 items).  Here a trained recommender is read once into arrays and a chunk
of contexts is scored with matrix products:

- LinGreedy / LinUCB / LinTS: ``x . beta_a`` for all arms in one product; the quadratic forms
  ``x^T A_a^-1 x`` of all arms in a second one (the upper triangle of ``x x^T`` against the stacked
  ``A_a^-1``), and LinUCB adds ``alpha * sqrt(q)``.  LinGreedy replaces a context's row by uniform draws
  with probability ``epsilon``.  LinTS draws ``beta~_a = beta_a + L_a z`` with ``L_a`` the Cholesky factor
  of ``alpha^2 A_a^-1``, as MABWiser does; in MABWiser 2.7.4 every arm's model holds a copy of the same
  random generator state, so all arms of a context use the same ``z`` (their draws are correlated).  We
  keep that distribution: one ``z`` per context, and ``x^T L_a z`` for all arms in one product.
- Random: uniform draws; Popularity: MABWiser's Dirichlet draw around the normalised arm means (as
  normalised Gamma draws); ThompsonSampling, alone or inside Clusters: Beta(successes, failures) per arm of
  the context's cluster (MABWiser's own fitted KMeans assigns the cluster).
- NeuralLinear: its engine already scores a matrix.

The ranking is Mab2Rec's: sigmoid of the expectations, best first.  ``top_k`` finds the best ``k + 1`` by
``argpartition`` and only where two of them tie after the sigmoid sorts the whole row with ``np.argsort``
as Mab2Rec does, so ties break the same way.  Deterministic policies therefore give Mab2Rec's lists;
sampling policies give lists with the same distribution (tests check both).  Policies not listed above (or
with ``scale=True``) return ``None`` from ``scorer_for`` and keep Mab2Rec's own path.

MABWiser has no public accessor for its fitted models, so the scorers read its engine (``mab._imp``);
mabwiser is pinned in requirements.txt for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from mabwiser.mab import LearningPolicy, NeighborhoodPolicy
from scipy.special import expit

from pipeline.data.dataset import CONTEXT_ID, ITEM_ID

SCORE = "score"
CELLS_PER_CHUNK = 4_000_000  # contexts x arms scored at once: 32 MB per float64 matrix, bounded memory


# ------------------------------------------------------------------------------------------- scorers
class LinearScorer:
    """MABWiser's LinGreedy, LinUCB or LinTS, all arms at once."""

    def __init__(self, arms: list, betas: np.ndarray, inverses: np.ndarray | None, kind: str, alpha: float = 0.0,
                 epsilon: float = 0.0):
        self.arms, self.betas, self.kind, self.alpha, self.epsilon = arms, betas, kind, alpha, epsilon
        d = betas.shape[1]
        if inverses is not None and kind == "ucb":  # x^T A x = sum_{i<=j} c_ij x_i x_j, c_ii = A_ii, c_ij = 2 A_ij
            self._upper = np.triu_indices(d)
            weights = np.where(self._upper[0] == self._upper[1], 1.0, 2.0)
            self._quadratic_weights = np.ascontiguousarray((inverses[:, self._upper[0], self._upper[1]] * weights).T)
        if inverses is not None and kind == "ts":  # x^T L z = sum_{i>=j} L_ij x_i z_j
            self._lower = np.tril_indices(d)
            factors = np.linalg.cholesky(np.square(alpha) * inverses)
            self._factor_weights = np.ascontiguousarray(factors[:, self._lower[0], self._lower[1]].T)

    @property
    def is_deterministic(self) -> bool:
        return self.kind == "ucb" or (self.kind == "greedy" and self.epsilon == 0)

    @classmethod
    def from_recommender(cls, recommender) -> "LinearScorer | None":
        arrays = linear_arrays(recommender)
        return None if arrays is None else cls(**arrays)

    def quadratic(self, contexts: np.ndarray) -> np.ndarray:
        """``x^T A_a^-1 x`` for every context row and arm, shape (contexts, arms)."""
        pairs = contexts[:, self._upper[0]] * contexts[:, self._upper[1]]
        return np.maximum(pairs @ self._quadratic_weights, 0.0)

    def bonus(self, contexts: np.ndarray) -> np.ndarray:
        """LinUCB's exploration bonus ``alpha * sqrt(x^T A^-1 x)`` per arm (zeros for the other kinds)."""
        if self.kind != "ucb":
            return np.zeros((len(contexts), len(self.arms)))
        return self.alpha * np.sqrt(self.quadratic(contexts))

    def scores(self, contexts: np.ndarray) -> np.ndarray:
        """Deterministic part: ``x . beta`` (plus the UCB bonus for LinUCB)."""
        values = contexts @ self.betas.T
        return values + self.bonus(contexts) if self.kind == "ucb" else values

    def expectations(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "ts":
            shared = rng.standard_normal(contexts.shape)  # one z per context, shared by all arms (see above)
            pairs = contexts[:, self._lower[0]] * shared[:, self._lower[1]]
            return contexts @ self.betas.T + pairs @ self._factor_weights
        values = self.scores(contexts)
        if self.kind == "greedy" and self.epsilon > 0:
            explore = rng.random(len(contexts)) < self.epsilon
            values[explore] = rng.random((int(explore.sum()), len(self.arms)))
        return values


def linear_arrays(recommender) -> dict | None:
    """A trained LinGreedy/LinUCB/LinTS recommender as ``LinearScorer``'s arguments: its arms, each arm's
    ``beta`` and ``A^-1`` (LinGreedy: none), kind, alpha and epsilon; ``None`` for any other policy."""
    policy = recommender.learning_policy
    kinds = {LearningPolicy.LinUCB: "ucb", LearningPolicy.LinTS: "ts", LearningPolicy.LinGreedy: "greedy"}
    kind = kinds.get(type(policy))
    if kind is None or recommender.neighborhood_policy is not None or policy.scale:
        return None
    models = recommender.mab._imp.arm_to_model  # see the module docstring
    arms = list(recommender.mab.arms)
    if any(models[arm].beta is None for arm in arms):
        return None
    return {"arms": arms, "betas": np.stack([models[arm].beta for arm in arms]),
            "inverses": np.stack([models[arm].A_inv for arm in arms]) if kind != "greedy" else None,
            "kind": kind, "alpha": float(getattr(policy, "alpha", 0.0)),
            "epsilon": float(getattr(policy, "epsilon", 0.0))}


class RandomScorer:
    def __init__(self, arms: list):
        self.arms = arms

    def expectations(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.random((len(contexts), len(self.arms)))


class PopularityScorer:
    """MABWiser's randomized popularity: one Dirichlet draw around the normalised arm means per context."""

    def __init__(self, arms: list, concentrations: np.ndarray):
        self.arms, self.concentrations = arms, concentrations

    def expectations(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # A Dirichlet draw is a row of Gamma(concentration) draws divided by its sum; numpy's dirichlet
        # switches to slower stick-breaking for concentrations below 0.1 (every arm here), same distribution.
        draws = rng.standard_gamma(self.concentrations, size=(len(contexts), len(self.arms)))
        with np.errstate(invalid="ignore"):
            return draws / draws.sum(axis=1, keepdims=True)


class ThompsonScorer:
    """Beta(successes, failures) per arm; with Clusters, the counts of the context's cluster."""

    def __init__(self, arms: list, successes: np.ndarray, failures: np.ndarray, kmeans=None):
        self.arms, self.successes, self.failures, self.kmeans = arms, successes, failures, kmeans  # (clusters, arms)

    def expectations(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clusters = self.kmeans.predict(contexts) if self.kmeans is not None else np.zeros(len(contexts), dtype=int)
        out = np.empty((len(contexts), len(self.arms)))
        for cluster in np.unique(clusters):
            rows = np.flatnonzero(clusters == cluster)
            out[rows] = rng.beta(self.successes[cluster], self.failures[cluster], size=(len(rows), len(self.arms)))
        return out


class EngineScorer:
    """A policy engine that scores a matrix itself (our NeuralLinear)."""

    def __init__(self, engine):
        self.engine, self.arms = engine, list(engine.arms)

    def expectations(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.engine.scores(contexts)


def _thompson_counts(thompson, arms: list) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([thompson.arm_to_success_count[arm] for arm in arms], dtype=float),
            np.array([thompson.arm_to_fail_count[arm] for arm in arms], dtype=float))


def scorer_for(recommender):
    """The fast scorer of a trained recommender, or ``None`` where Mab2Rec's own path must be used."""
    mab = recommender.mab
    if hasattr(mab, "scores") and not hasattr(mab, "_imp"):  # our NeuralLinear engine
        return EngineScorer(mab)
    arms = list(mab.arms)
    policy, neighborhood = recommender.learning_policy, recommender.neighborhood_policy
    if neighborhood is None:
        if isinstance(policy, LearningPolicy.Random):
            return RandomScorer(arms)
        if isinstance(policy, LearningPolicy.Popularity):
            means = mab._imp.arm_to_expectation
            return PopularityScorer(arms, np.array([means[arm] for arm in arms]) + np.finfo(float).eps)
        if isinstance(policy, LearningPolicy.ThompsonSampling):
            successes, failures = _thompson_counts(mab._imp, arms)
            return ThompsonScorer(arms, successes[None], failures[None])
        return LinearScorer.from_recommender(recommender)
    if isinstance(neighborhood, NeighborhoodPolicy.Clusters) and isinstance(policy, LearningPolicy.ThompsonSampling):
        counts = [_thompson_counts(lp, arms) for lp in mab._imp.lp_list]
        return ThompsonScorer(arms, np.stack([s for s, _ in counts]), np.stack([f for _, f in counts]),
                              kmeans=mab._imp.kmeans)
    return None


# ------------------------------------------------------------------------------------------- ranking
def top_k(expectations: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mab2Rec's ranking of each row: arm positions (rows x k), best first, and their sigmoid scores.

    Mab2Rec sorts ``sigmoid(expectations)`` with ``np.argsort`` and reverses the last ``k``; where the
    sigmoid ties two of the best ``k + 1`` (equal expectations, or values so close the sigmoid rounds them
    together) that row is sorted exactly that way, so ties break as in Mab2Rec.
    """
    n_arms = expectations.shape[1]
    k = min(k, n_arms)
    width = min(k + 1, n_arms)
    rows = np.arange(len(expectations))[:, None]  # indexing by rows: take_along_axis cost 10 us a call (serving)
    best = np.argpartition(expectations, n_arms - width, axis=1)[:, n_arms - width:]
    values = expectations[rows, best]
    order = np.argsort(-values, axis=1, kind="stable")
    best, values = best[rows, order], expit(values[rows, order])
    tied = (values[:, 1:] == values[:, :-1]).any(axis=1) | np.isnan(values).any(axis=1)
    if tied.any():
        full = expit(expectations[tied])
        ranked = np.flip(np.argsort(full)[:, -k:], axis=1)  # Mab2Rec's own expression
        best[tied, :k] = ranked
        values[tied, :k] = np.take_along_axis(full, ranked, axis=1)
    return best[:, :k], values[:, :k]


@dataclass
class ScoringInput:
    """The test contexts to rank, in Mab2Rec's order (first appearance in the test rows), and their features."""

    context_ids: np.ndarray
    matrix: np.ndarray  # (contexts, features); zero columns for non-contextual policies

    @classmethod
    def of(cls, features, contextual: bool) -> "ScoringInput":
        """The test contexts of a fold (``FoldFeatures``); zero-width rows for a non-contextual policy."""
        ids = pd.unique(features.test[CONTEXT_ID])
        return cls(ids, features.context_matrix(ids) if contextual else np.zeros((len(ids), 0)))


def recommend_all(scorer, inputs: ScoringInput, k: int, seed: int) -> pd.DataFrame:
    """Every context's top-k as Mab2Rec's ``score`` returns it: ``context_id, item_id, score``, best first.

    Contexts are scored in chunks of about ``CELLS_PER_CHUNK`` (context, arm) cells, so memory stays bounded
    whatever the size; sampling policies draw from one generator seeded by ``seed``, chunk after chunk.
    """
    rng = np.random.default_rng([seed, 7])
    n, n_arms = len(inputs.context_ids), len(scorer.arms)
    chunk = max(1, CELLS_PER_CHUNK // max(n_arms, 1))
    width = min(k, n_arms)
    positions = np.empty((n, width), dtype=np.int64)
    scores = np.empty((n, width))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        expectations = scorer.expectations(inputs.matrix[start:stop], rng)
        positions[start:stop], scores[start:stop] = top_k(expectations, width)
    arms = np.asarray(scorer.arms, dtype=object if not _numeric(scorer.arms) else None)
    return pd.DataFrame({CONTEXT_ID: np.repeat(inputs.context_ids, width), ITEM_ID: arms[positions.ravel()],
                         SCORE: scores.ravel()})


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)
