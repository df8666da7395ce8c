"""NeuralLinear: a two-tower encoder with a Bayesian linear head, as a Mab2Rec recommender.

``NeuralLinear`` (in ``spec.py``) is the policy value (a typed, validated config like MABWiser's ``LearningPolicy.LinUCB``);
``NeuralLinearBandit`` is the engine, with the same surface as MABWiser's ``MAB`` that Mab2Rec drives
(``arms``, ``fit``, ``partial_fit``, ``predict_expectations``, ``add_arm``, ``remove_arm``); and
``NeuralLinearRecommender`` is a Mab2Rec ``BanditRecommender`` whose engine is ours, so Mab2Rec's
``train``/``score`` and Jurity's metrics evaluate it exactly like the MABWiser policies.

Learning: every event's embedding updates the head's sufficient statistics; every ``retrain_every``
events (or every ``retrain_growth`` x the events seen so far, whichever is more) the encoder is retrained
on the most recent ``retrain_window`` events (logistic loss on clicks, squared error on any other reward)
and the head is recomputed from all events on the new embeddings.  The growing interval keeps a long log
linear in cost: with a fixed interval, 800k events would mean 800 recomputations over up to 800k events
each; with 10% growth, about 70 (logs under 10,000 events are unaffected).  ``warm_start`` pre-trains the
encoder on the clicks of the training log first (BPR or contrastive).  Decisions: Thompson sampling from
the head's posterior (one weight draw per context) or UCB ``z . mu + alpha * sqrt(z^T P^-1 z)`` (Neural-LinUCB).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from mab2rec import BanditRecommender

from pipeline.neural.encoder import TwoTowerEncoder, pretrain_ranking, train_clicks
from pipeline.neural.posterior import SAFEGUARDS, BayesianLinearHead
from pipeline.neural.spec import DECISIONS, WARM_STARTS, NeuralLinear  # noqa: F401 (re-exported)
from pipeline.values import plain

SCORE_CHUNK = 256  # contexts scored at once, to bound memory at (chunk x items x embedding)
RECOMPUTE_CHUNK = 100_000  # events embedded at once when the head is recomputed


class NeuralLinearBandit:
    """The engine: encoder + head over a set of arms (items) described by feature vectors."""

    is_contextual = True

    def __init__(self, arms: list, policy: NeuralLinear, item_features: pd.DataFrame | None, seed: int):
        self.policy = policy
        self.seed = seed
        self.arms = [plain(arm) for arm in arms]
        self._identity_features = item_features is None
        if item_features is None:  # no item table: each arm is its own one-hot "feature"
            item_features = pd.DataFrame(np.eye(len(self.arms)), columns=[f"arm_{i}" for i in range(len(self.arms))])
            item_features.insert(0, "item_id", self.arms)
        self._features = {plain(item): row for item, row in
                          zip(item_features.iloc[:, 0], item_features.iloc[:, 1:].to_numpy(dtype=float))}
        self._feature_dim = item_features.shape[1] - 1
        self.encoder: TwoTowerEncoder | None = None
        self.head: BayesianLinearHead | None = None
        self.counts: Counter = Counter()
        self._rng = np.random.default_rng(seed)
        self._torch_rng = torch.Generator().manual_seed(seed)
        self._is_initial_fit = False

    # ------------------------------------------------------------------------------------- arms
    def add_arm(self, arm, binarizer=None) -> None:
        arm = plain(arm)
        if arm not in self.arms:
            self._feature_of(arm)
            self.arms.append(arm)

    def remove_arm(self, arm) -> None:
        self.arms.remove(plain(arm))

    def _feature_of(self, arm) -> np.ndarray:
        if arm in self._features:
            return self._features[arm]
        if self._identity_features:  # an arm unseen at start-up: no identity column, so an all-zero row
            return np.zeros(self._feature_dim)
        raise KeyError(f"item {arm!r} has no row in the item features given to NeuralLinear")

    def _arm_matrix(self, arms: list) -> np.ndarray:
        return np.array([self._feature_of(arm) for arm in arms], dtype=float).reshape(len(arms), self._feature_dim)

    # --------------------------------------------------------------------------------- learning
    def fit(self, decisions, rewards, contexts) -> None:
        """Forget everything, (optionally) warm-start the encoder, then learn from the events in order."""
        contexts, positions, rewards = self._events(decisions, rewards, contexts)
        catalog = self._arm_matrix(self.arms)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.encoder = TwoTowerEncoder(contexts.shape[1], self._feature_dim, tuple(self.policy.hidden),
                                           self.policy.embedding_dim)
        self.encoder.set_standardisation(contexts, catalog)
        self.head = BayesianLinearHead(self.encoder.embedding_dim, self.policy.l2_lambda, self.policy.a0,
                                       self.policy.b0, self.policy.max_condition)
        # Events seen so far: context rows, item positions in self.arms (rows of the arm feature matrix), rewards.
        self._history = (np.empty((0, contexts.shape[1])), np.empty(0, dtype=np.int64), np.empty(0))
        self._since_retrain = 0
        if self.policy.warm_start != "none":
            clicked = rewards > 0
            arm_index = {arm: i for i, arm in enumerate(self.arms)}
            positives = np.array([arm_index[plain(d)] for d in np.asarray(decisions)[clicked]], dtype=int)
            self.counts["warm_start_clicks"] = int(clicked.sum())
            pretrain_ranking(self.encoder, contexts[clicked], positives, catalog, self.policy.warm_start,
                             self.policy.warm_start_epochs, self.policy.lr, self.policy.batch_size, self._torch_rng)
        self._is_initial_fit = True
        self._item_tower_cache = None  # a new encoder
        self._learn(contexts, positions, rewards)

    def partial_fit(self, decisions, rewards, contexts) -> None:
        if not self._is_initial_fit:
            return self.fit(decisions, rewards, contexts)
        self._learn(*self._events(decisions, rewards, contexts))

    def _events(self, decisions, rewards, contexts):
        """Context rows, each decision's position in the item registry, rewards."""
        contexts = np.asarray(contexts, dtype=float)
        rewards = np.asarray(rewards, dtype=float)
        positions = np.array([self._registry_position(plain(d)) for d in np.asarray(decisions)], dtype=np.int64)
        if contexts.ndim != 2 or len(contexts) != len(rewards) or len(positions) != len(rewards):
            raise ValueError(f"NeuralLinear needs one context row per decision; got {contexts.shape} contexts, "
                             f"{len(rewards)} rewards")
        return contexts, positions, rewards

    def _registry_position(self, item) -> int:
        """Position of ``item`` in the append-only item registry (history keeps positions, not feature rows:
        800k events x 31 item features would be 200 MB; arms may be removed, the registry never shrinks)."""
        registry = self.__dict__.setdefault("_registry", {})
        if item not in registry:
            registry[item] = len(registry)
            self.__dict__.setdefault("_registry_rows", []).append(self._feature_of(item))
        return registry[item]

    def _learn(self, contexts: np.ndarray, positions: np.ndarray, rewards: np.ndarray) -> None:
        """Head update per event; encoder retrain + head recompute every ``_retrain_interval()`` events."""
        self._history = tuple(np.concatenate([old, new]) for old, new in zip(self._history, (contexts, positions, rewards)))
        start, seen_before = 0, len(self._history[2]) - len(rewards)
        while start < len(rewards):
            interval = self._retrain_interval(seen_before + start - self._since_retrain)
            stop = min(len(rewards), start + interval - self._since_retrain)
            self.head.update(self._pair_embeddings(contexts[start:stop], positions[start:stop]), rewards[start:stop])
            self._since_retrain += stop - start
            start = stop
            if self._since_retrain >= interval:
                self._retrain(upto=seen_before + stop)

    def _retrain_interval(self, seen_at_last_retrain: int) -> int:
        return max(self.policy.retrain_every, int(self.policy.retrain_growth * seen_at_last_retrain))

    def _retrain(self, upto: int) -> None:
        """Retrain the encoder on the latest window of events seen so far; recompute the head on them all."""
        contexts, positions, rewards = (part[:upto] for part in self._history)
        recent = slice(max(0, upto - self.policy.retrain_window), upto)
        train_clicks(self.encoder, contexts[recent], self._catalog()[positions[recent]], rewards[recent],
                     epochs=self.policy.retrain_epochs, lr=self.policy.lr, batch_size=self.policy.batch_size,
                     generator=self._torch_rng)
        self.head.reset()
        for start in range(0, upto, RECOMPUTE_CHUNK):  # chunks bound the memory of the embeddings
            part = slice(start, min(start + RECOMPUTE_CHUNK, upto))
            self.head.update(self._pair_embeddings(contexts[part], positions[part]), rewards[part])
        self._since_retrain = 0
        self._item_tower_cache = None  # the encoder changed
        self.counts["encoder_retrains"] += 1

    def _catalog(self) -> np.ndarray:
        """Feature rows of the item registry, by position."""
        return np.asarray(self._registry_rows, dtype=float).reshape(-1, self._feature_dim)

    # -------------------------------------------------------------------------------- embeddings
    def _pair_embeddings(self, contexts: np.ndarray, positions: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            u = self.encoder.context_side(torch.as_tensor(contexts, dtype=torch.float64))
            v = self.encoder.item_side(torch.as_tensor(self._catalog()[positions], dtype=torch.float64))
            return TwoTowerEncoder.join(u, v).numpy()

    def _towers(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            u = self.encoder.context_side(torch.as_tensor(contexts, dtype=torch.float64)).numpy()
        return u, self._item_tower()

    def _item_tower(self) -> np.ndarray:
        """Every arm's item-tower embedding.  It does not depend on the context, so it is kept until the encoder
        or the arms change (a served request used to recompute it for all items: 66 of its 91 ms)."""
        cached = self.__dict__.get("_item_tower_cache")  # models pickled before the cache have none
        arms = tuple(self.arms)
        if cached is None or cached[0] != arms:
            with torch.no_grad():
                tower = self.encoder.item_side(torch.as_tensor(self._arm_matrix(self.arms), dtype=torch.float64))
            cached = self._item_tower_cache = (arms, tower.numpy())
        return cached[1]

    # ------------------------------------------------------------------------------------ scoring
    def scores(self, contexts, decision: str | None = None) -> np.ndarray:
        """Score of every arm (columns in ``arms`` order) for every context row, by the decision rule.

        ``mean``: ``z . mu``; ``ucb``: plus ``alpha * sqrt(z^T P^-1 z)``; ``thompson``: ``z . w`` with one
        posterior draw ``w`` per context.
        """
        decision = decision or self.policy.decision
        u, v = self._towers(np.asarray(contexts, dtype=float).reshape(-1, self.encoder.context_dim))
        width = u.shape[1]
        if decision == "ucb":
            out = np.empty((len(u), len(v)))
            for start in range(0, len(u), SCORE_CHUNK):
                interactions = u[start:start + SCORE_CHUNK, None, :] * v[None]  # (chunk, items, e + 1)
                grid = np.concatenate([interactions, np.broadcast_to(v, interactions.shape)], axis=-1)
                out[start:start + SCORE_CHUNK] = self.head.ucb(grid, self.policy.alpha)
            return out
        weights = self.head.mean[None, :] if decision == "mean" else self.head.sample(self._rng, size=len(u))
        interaction, item_side = weights[:, :width], weights[:, width:]
        return (u * interaction) @ v.T + item_side @ v.T

    def predict_expectations(self, contexts=None):
        scores = self.scores(contexts)
        rows = [dict(zip(self.arms, row)) for row in scores.tolist()]
        return rows[0] if len(rows) == 1 else rows

    def predict(self, contexts=None):
        scores = self.scores(contexts)
        best = [self.arms[i] for i in scores.argmax(axis=1)]
        return best[0] if len(best) == 1 else best

    def diagnostics(self) -> dict[str, int]:
        """How often each numerical safeguard fired, plus training counters."""
        counts = Counter({name: 0 for name in SAFEGUARDS})
        counts.update(self.head.counts if self.head is not None else {})
        counts.update(self.counts)
        return dict(counts)

    # ------------------------------------------------------------------------------------- export
    def export(self, directory: Path) -> None:
        """``encoder.npz`` (weights, input standardisation, arm features) + ``heads.json`` (posterior)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"weight/{name}": tensor.numpy() for name, tensor in self.encoder.state_dict().items()}
        arrays["arm_features"] = self._arm_matrix(self.arms)
        np.savez(directory / "encoder.npz", **arrays)
        heads = {
            "policy": {name: (list(value) if isinstance(value, tuple) else value)
                       for name, value in self.policy._asdict().items()},
            "seed": self.seed,
            "arms": self.arms,
            "context_dim": self.encoder.context_dim,
            "item_dim": self._feature_dim,
            "head": self.head.to_dict(),
            "safeguards": self.diagnostics(),
        }
        (directory / "heads.json").write_text(json.dumps(heads))

    @classmethod
    def load(cls, directory: Path) -> "NeuralLinearBandit":
        """Rebuild a scoring-ready engine from an export, without any training history."""
        directory = Path(directory)
        heads = json.loads((directory / "heads.json").read_text())
        policy_fields = dict(heads["policy"], hidden=tuple(heads["policy"]["hidden"]))
        policy = NeuralLinear(**policy_fields)
        with np.load(directory / "encoder.npz") as arrays:
            features = pd.DataFrame(arrays["arm_features"])
            features.insert(0, "item_id", heads["arms"])
            engine = cls(heads["arms"], policy, features, heads["seed"])
            engine.encoder = TwoTowerEncoder(heads["context_dim"], heads["item_dim"], policy.hidden, policy.embedding_dim)
            state = {name.removeprefix("weight/"): torch.from_numpy(arrays[name])
                     for name in arrays.files if name.startswith("weight/")}
        engine.encoder.load_state_dict(state)
        engine.head = BayesianLinearHead.from_dict(heads["head"])
        engine._is_initial_fit = True
        return engine


class NeuralLinearRecommender(BanditRecommender):
    """A Mab2Rec ``BanditRecommender`` whose engine is ``NeuralLinearBandit``."""

    def __init__(self, policy: NeuralLinear, item_features: pd.DataFrame | None, top_k: int = 10, seed: int = 0):
        # BanditRecommender.__init__ would validate the policy against MABWiser's MAB, which only knows
        # MABWiser's own policies; set the same attributes directly instead.
        self.learning_policy = policy
        self.neighborhood_policy = None
        self.top_k = top_k
        self.seed = seed
        self.n_jobs = 1
        self.backend = None
        self.item_features = item_features
        self.mab = None

    def _init(self, arms: list) -> None:
        self.mab = NeuralLinearBandit(arms, self.learning_policy, self.item_features, self.seed)

    def warm_start(self, arm_to_features: dict, distance_quantile: float = None) -> None:
        """Nothing to do: cold items are scored from their own features through the item tower."""

    def diagnostics(self) -> dict[str, int]:
        return self.mab.diagnostics()

    def export(self, directory: Path) -> None:
        self.mab.export(directory)
