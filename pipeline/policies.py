"""Policies stage: turn the YAML policy specs into Mab2Rec ``BanditRecommender`` objects.

The registry is read from MABWiser itself (every ``NamedTuple`` inside ``LearningPolicy`` and
``NeighborhoodPolicy``), so any policy MABWiser offers can be named in YAML without an edit here, and the
valid names and parameters listed in error messages are always the installed library's.  Our own
policies join the registry with one line each; such a policy value provides ``build_recommender`` and
``is_contextual`` itself instead of going through MABWiser's ``MAB``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from mab2rec import BanditRecommender
from mabwiser.mab import MAB, LearningPolicy, NeighborhoodPolicy

from pipeline.neural.spec import NeuralLinear


def _policy_classes(namespace: type) -> dict[str, type]:
    return {
        name: member
        for name, member in vars(namespace).items()
        if not name.startswith("_") and isinstance(member, type) and hasattr(member, "_fields")
    }


LEARNING_POLICIES: dict[str, type] = {**_policy_classes(LearningPolicy), "NeuralLinear": NeuralLinear}
NEIGHBORHOOD_POLICIES: dict[str, type] = _policy_classes(NeighborhoodPolicy)

#: Names reserved for rows the pipeline adds itself.
RESERVED_POLICY_NAMES = frozenset({"Oracle", "Logging"})  # rows the pipeline adds itself


@dataclass(frozen=True)
class PolicySpec:
    """A validated policy: MABWiser's policy values plus the display name used on the leaderboard."""

    name: str
    learning_policy: Any
    neighborhood_policy: Any = None
    description: str = field(default="")

    @property
    def is_contextual(self) -> bool:
        """Whether the policy needs context features (MABWiser decides from the policy combination)."""
        own = getattr(self.learning_policy, "is_contextual", None)
        if own is not None:
            return own
        return MAB(arms=[0, 1], learning_policy=self.learning_policy,
                   neighborhood_policy=self.neighborhood_policy).is_contextual

    @property
    def is_sampling(self) -> bool:
        """Whether its lists are random draws (so one list is one sample of its action distribution)."""
        policy = self.learning_policy
        if isinstance(policy, (LearningPolicy.ThompsonSampling, LearningPolicy.LinTS, LearningPolicy.Popularity,
                               LearningPolicy.Random, LearningPolicy.Softmax)):
            return True
        if getattr(policy, "decision", None) == "ts":  # NeuralLinear's Thompson-sampling rule
            return True
        return float(getattr(policy, "epsilon", 0.0) or 0.0) > 0

    def build(self, top_k: int, seed: int, item_features: pd.DataFrame | None = None) -> BanditRecommender:
        """A fresh, untrained recommender (a new object each call, so folds never share state).

        ``item_features`` (``item_id`` + feature columns) is used by policies that score items from their
        features (NeuralLinear); MABWiser's policies ignore it.
        """
        own_builder = getattr(self.learning_policy, "build_recommender", None)
        if own_builder is not None:
            return own_builder(top_k=top_k, seed=seed, item_features=item_features)
        return BanditRecommender(
            learning_policy=self.learning_policy,
            neighborhood_policy=self.neighborhood_policy,
            top_k=top_k,
            seed=seed,
            n_jobs=1,
        )


def _describe_fields(policy_class: type) -> str:
    defaults = policy_class._field_defaults
    if not policy_class._fields:
        return "it takes no parameters"
    return "valid parameters: " + ", ".join(f"{name} (default {defaults.get(name)!r})" for name in policy_class._fields)


def make_policy_value(kind: str, name: str, params: Mapping[str, Any]) -> Any:
    """Instantiate and validate one MABWiser policy value.

    ``kind`` is ``"learning_policy"`` or ``"neighborhood_policy"``.  Raises ``ValueError`` naming the
    valid policies or parameters when ``name`` or a key of ``params`` is unknown, and re-raises
    MABWiser's own range/type checks as ``ValueError`` with the policy name in front.
    """
    registry = LEARNING_POLICIES if kind == "learning_policy" else NEIGHBORHOOD_POLICIES
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid names are: {', '.join(sorted(registry))}")
    policy_class = registry[name]
    unknown = sorted(set(params) - set(policy_class._fields))
    if unknown:
        raise ValueError(f"{name} has no parameter {', '.join(map(repr, unknown))}; {_describe_fields(policy_class)}")
    value = policy_class(**params)
    try:
        value._validate()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())}): {error}") from None
    return value


def make_policy_spec(
    name: str,
    learning_policy: str,
    params: Mapping[str, Any],
    neighborhood_policy: str | None,
    neighborhood_params: Mapping[str, Any],
) -> PolicySpec:
    """Validate a whole policy entry, including the learning/neighborhood combination."""
    learning = make_policy_value("learning_policy", learning_policy, params)
    neighborhood = None
    if neighborhood_policy is not None:
        neighborhood = make_policy_value("neighborhood_policy", neighborhood_policy, neighborhood_params)
    elif neighborhood_params:
        raise ValueError("neighborhood_params given without a neighborhood_policy")
    if hasattr(learning, "build_recommender"):
        if neighborhood is not None:
            raise ValueError(f"{learning_policy} does not take a neighborhood_policy")
    else:
        try:  # MABWiser checks which learning policies each neighborhood policy supports.
            MAB(arms=[0, 1], learning_policy=learning, neighborhood_policy=neighborhood)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{learning_policy} with {neighborhood_policy}: {error}") from None
    description = learning_policy + (f" + {neighborhood_policy}" if neighborhood_policy else "")
    return PolicySpec(name=name, learning_policy=learning, neighborhood_policy=neighborhood, description=description)


def accepted_rewards(spec: PolicySpec) -> str:
    """Which rewards a policy can learn from: ``binary`` (Thompson sampling's Beta posteriors count successes),
    ``non-negative`` (Popularity's Dirichlet needs non-negative totals; MABWiser says only "alpha < 0") or
    ``real`` (the ridge regressions, the means, NeuralLinear's squared error)."""
    policy = type(spec.learning_policy).__name__
    if policy == "ThompsonSampling":
        return "binary"
    if policy == "Popularity":
        return "non-negative"
    return "real"


#: Named in every refusal of a reward a policy cannot learn from.
REAL_REWARD_POLICIES = "LinUCB, LinTS, LinGreedy, EpsilonGreedy, UCB1, NeuralLinear"


def learns_from(spec: PolicySpec, lowest: float, binary: bool) -> bool:
    """Whether ``spec`` can learn from rewards whose lowest value is ``lowest`` (``binary``: all are 0 or 1)."""
    kind = accepted_rewards(spec)
    return not ((kind == "binary" and not binary) or (kind == "non-negative" and lowest < 0))
