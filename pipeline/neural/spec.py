"""The NeuralLinear policy value: a typed, validated config like MABWiser's ``LearningPolicy.LinUCB``.

Kept apart from the engine (``pipeline.neural.policy``) so that naming the policy, validating a config or
running MABWiser-only grids does not import PyTorch (about 190 MB per worker process).
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd

DECISIONS = ("thompson", "ucb")
WARM_STARTS = ("none", "bpr", "contrastive")


class NeuralLinear(NamedTuple):
    """NeuralLinear learning policy (ours, not MABWiser's); every field can be set in YAML ``params``."""

    decision: str = "thompson"
    alpha: float = 1.0
    l2_lambda: float = 1.0
    embedding_dim: int = 16
    hidden: tuple = (64,)
    warm_start: str = "bpr"
    warm_start_epochs: int = 30
    lr: float = 0.001
    retrain_every: int = 1000
    retrain_growth: float = 0.1
    retrain_epochs: int = 2
    retrain_window: int = 20_000
    batch_size: int = 256
    a0: float = 1.0
    b0: float = 1.0
    max_condition: float = 1e8

    is_contextual = True
    uses_torch = True

    def _validate(self) -> None:
        def check(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(message)

        check(self.decision in DECISIONS, f"decision must be one of {DECISIONS}; got {self.decision!r}")
        check(self.warm_start in WARM_STARTS, f"warm_start must be one of {WARM_STARTS}; got {self.warm_start!r}")
        for name in ("alpha", "l2_lambda", "lr", "a0", "b0", "max_condition"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} must be a number; got {value!r}")
        check(self.alpha >= 0, f"alpha cannot be negative; got {self.alpha}")
        check(self.l2_lambda > 0 and self.lr > 0 and self.a0 > 0 and self.b0 > 0,
              "l2_lambda, lr, a0 and b0 must be positive")
        check(self.max_condition > 1, f"max_condition must exceed 1; got {self.max_condition}")
        check(isinstance(self.retrain_growth, (int, float)) and not isinstance(self.retrain_growth, bool)
              and self.retrain_growth >= 0, f"retrain_growth must be a non-negative number; got {self.retrain_growth!r}")
        for name in ("embedding_dim", "warm_start_epochs", "retrain_every", "retrain_epochs", "retrain_window",
                     "batch_size"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= (0 if "epochs" in name else 1),
                  f"{name} must be a {'non-negative' if 'epochs' in name else 'positive'} integer; got {value!r}")
        check(isinstance(self.hidden, (list, tuple)) and all(isinstance(h, int) and h > 0 for h in self.hidden),
              f"hidden must be a list of positive layer widths, e.g. [64]; got {self.hidden!r}")

    def build_recommender(self, top_k: int, seed: int, item_features: pd.DataFrame | None):
        from pipeline.neural.policy import NeuralLinearRecommender  # PyTorch is imported only when NeuralLinear runs

        return NeuralLinearRecommender(self, item_features, top_k=top_k, seed=seed)
