"""Bayesian linear regression heads with numerically safe posterior sampling.

The head models a reward as ``r = z . w + noise`` on an embedding ``z`` with the conjugate
normal-inverse-gamma prior of Riquelme et al. (2018), "Deep Bayesian Bandits Showdown":

    w | s2 ~ N(0, s2 / l2_lambda * I),    s2 ~ InvGamma(a0, b0)

After ``n`` observations with sufficient statistics ``G = Z^T Z``, ``c = Z^T r`` and ``q = r^T r``:

    precision  P  = G + l2_lambda * I
    mean       mu = P^-1 c                    (exactly the ridge-regression solution)
    a = a0 + n / 2,   b = b0 + (q - mu^T P mu) / 2
    sample:  s2 ~ InvGamma(a, b),  w = mu + sqrt(s2) * L^-T e   with  P = L L^T,  e ~ N(0, I)
    UCB:     z . mu + alpha * sqrt(z^T P^-1 z)

Factorising ``P`` is where sampling breaks on real data: near-collinear or huge embeddings make ``P``
ill-conditioned or, in floating point, not positive definite.  ``StableFactor`` applies the safeguards of
seed 000's "adaptive posterior sampling with dynamic regularization" (APS-DR), in order, and counts each:

1. ``nonfinite``: NaN or infinite statistics are replaced by the prior (the event is unusable);
2. symmetrisation ``(P + P^T) / 2`` (always; floating-point sums drift);
3. ``ridge_raised``: when the condition number exceeds ``max_condition`` the ridge is raised just enough
   to bring it back to ``max_condition``;
4. ``jitter``: a Cholesky factorisation that still fails is retried with growing diagonal jitter;
5. ``eigen_fallback``: if that fails too, an eigen-decomposition with eigenvalues clipped from below.

A sampled weight vector that is not finite is replaced by the mean (``sample_nonfinite``), so callers
never see NaN.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

SAFEGUARDS = ("nonfinite", "ridge_raised", "jitter", "eigen_fallback", "sample_nonfinite")


@dataclass
class StableFactor:
    """A factor ``L`` with ``L @ L.T`` equal to the (possibly regularised) precision matrix."""

    lower: np.ndarray  # lower-triangular for Cholesky; a general square root for the eigen fallback
    triangular: bool

    def solve(self, vector: np.ndarray) -> np.ndarray:
        """``P^-1 v`` through the factor."""
        return self.solve_transposed(self.solve_lower(vector))

    def solve_lower(self, vector: np.ndarray) -> np.ndarray:
        """``L^-1 v`` (so that ``||L^-1 z||^2 = z^T P^-1 z``)."""
        return np.linalg.solve(self.lower, vector)

    def solve_transposed(self, vector: np.ndarray) -> np.ndarray:
        """``L^-T v`` (a draw from ``N(0, P^-1)`` when ``v ~ N(0, I)``)."""
        return np.linalg.solve(self.lower.T, vector)


def stable_factor(precision: np.ndarray, counts: Counter, max_condition: float = 1e8,
                  fallback_diagonal: float = 1.0) -> tuple[StableFactor, np.ndarray]:
    """Factorise a precision matrix with the APS-DR safeguards; returns the factor and the matrix used."""
    d = precision.shape[0]
    if not np.all(np.isfinite(precision)):
        counts["nonfinite"] += 1
        precision = np.eye(d) * fallback_diagonal
    precision = (precision + precision.T) / 2
    eigenvalues = np.linalg.eigvalsh(precision)
    low, high = eigenvalues[0], eigenvalues[-1]
    if high <= 0 or low <= 0 or high / low > max_condition:
        counts["ridge_raised"] += 1
        # Smallest ridge r with (high + r) / (low + r) <= max_condition, and at least a tiny positive floor.
        ridge = max((high - max_condition * low) / (max_condition - 1), 0.0) + 1e-12 * max(abs(high), 1.0)
        precision = precision + ridge * np.eye(d)
    scale = float(np.mean(np.abs(np.diag(precision)))) or 1.0
    for attempt, jitter in enumerate([0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2]):
        try:
            lower = np.linalg.cholesky(precision + jitter * scale * np.eye(d))
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(lower)):
            if attempt:
                counts["jitter"] += 1
            return StableFactor(lower, triangular=True), precision
    counts["eigen_fallback"] += 1
    values, vectors = np.linalg.eigh(precision)
    values = np.clip(values, max(values[-1], scale) / max_condition, None)
    return StableFactor(vectors * np.sqrt(values), triangular=False), precision


class BayesianLinearHead:
    """Normal-inverse-gamma Bayesian linear regression with streaming sufficient statistics.

    ``update`` adds observations (exactly as adding them one at a time: the statistics are sums);
    ``mean``, ``sample`` and ``ucb`` read the posterior.  ``counts`` records every safeguard that fired.
    """

    def __init__(self, dim: int, l2_lambda: float = 1.0, a0: float = 1.0, b0: float = 1.0,
                 max_condition: float = 1e8):
        self.dim = dim
        self.l2_lambda = float(l2_lambda)
        self.a0, self.b0 = float(a0), float(b0)
        self.max_condition = float(max_condition)
        self.counts: Counter = Counter()
        self.reset()

    def reset(self) -> None:
        self.gram = np.zeros((self.dim, self.dim))
        self.moment = np.zeros(self.dim)
        self.reward_sq = 0.0
        self.n = 0
        self._posterior = None

    def update(self, embeddings: np.ndarray, rewards: np.ndarray) -> None:
        embeddings = np.asarray(embeddings, dtype=float).reshape(-1, self.dim)
        rewards = np.asarray(rewards, dtype=float).reshape(-1)
        usable = np.all(np.isfinite(embeddings), axis=1) & np.isfinite(rewards)
        if not usable.all():
            self.counts["nonfinite"] += int((~usable).sum())
            embeddings, rewards = embeddings[usable], rewards[usable]
        with np.errstate(over="ignore", invalid="ignore"):
            gram = self.gram + embeddings.T @ embeddings
            moment = self.moment + embeddings.T @ rewards
        if not (np.all(np.isfinite(gram)) and np.all(np.isfinite(moment))):
            self.counts["nonfinite"] += 1  # the sums overflowed: keep the statistics as they were
            return
        self.gram, self.moment = gram, moment
        self.reward_sq += float(rewards @ rewards)
        self.n += len(rewards)
        self._posterior = None

    def _solve(self):
        """Posterior mean, factor of the precision and the inverse-gamma parameters (cached until update)."""
        if self._posterior is None:
            precision = self.gram + self.l2_lambda * np.eye(self.dim)
            factor, used = stable_factor(precision, self.counts, self.max_condition, self.l2_lambda)
            mean = factor.solve(self.moment)
            if not np.all(np.isfinite(mean)):
                self.counts["nonfinite"] += 1
                mean = np.zeros(self.dim)
            a = self.a0 + self.n / 2
            b = max(self.b0 + (self.reward_sq - mean @ used @ mean) / 2, self.b0 * 1e-6)
            self._posterior = (mean, factor, a, b)
        return self._posterior

    @property
    def mean(self) -> np.ndarray:
        return self._solve()[0]

    def sample(self, rng: np.random.Generator, size: int = 1) -> np.ndarray:
        """``size`` weight vectors drawn from the posterior, shape (size, dim); never NaN."""
        mean, factor, a, b = self._solve()
        noise_var = b / rng.gamma(a, size=size)  # s2 ~ InvGamma(a, b)
        draws = factor.solve_transposed(rng.standard_normal((self.dim, size))).T
        weights = mean + np.sqrt(noise_var)[:, None] * draws
        bad = ~np.all(np.isfinite(weights), axis=1)
        if bad.any():
            self.counts["sample_nonfinite"] += int(bad.sum())
            weights[bad] = mean
        return weights

    def ucb(self, embeddings: np.ndarray, alpha: float) -> np.ndarray:
        """``z . mu + alpha * sqrt(z^T P^-1 z)`` for rows ``z`` of ``embeddings`` (any leading shape)."""
        mean, factor, _, _ = self._solve()
        flat = embeddings.reshape(-1, self.dim)
        width = np.sqrt(np.sum(factor.solve_lower(flat.T) ** 2, axis=0))
        return (flat @ mean + alpha * width).reshape(embeddings.shape[:-1])

    def to_dict(self) -> dict:
        """Every number needed to rebuild the posterior (plain floats: JSON round-trips them exactly)."""
        return {"dim": self.dim, "l2_lambda": self.l2_lambda, "a0": self.a0, "b0": self.b0,
                "max_condition": self.max_condition, "n": self.n, "reward_sq": self.reward_sq,
                "gram": self.gram.tolist(), "moment": self.moment.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "BayesianLinearHead":
        head = cls(data["dim"], data["l2_lambda"], data["a0"], data["b0"], data["max_condition"])
        head.gram = np.array(data["gram"], dtype=float).reshape(head.dim, head.dim)
        head.moment = np.array(data["moment"], dtype=float)
        head.reward_sq, head.n = float(data["reward_sq"]), int(data["n"])
        return head
