"""The config schema: the one source of truth for every YAML key, its type, range and default.

Each YAML block is a frozen pydantic model that forbids unknown keys.  ``load_config`` (in
``pipeline.config_loading``, re-exported here) reads a YAML file, applies ``--set key=value`` overrides and
validates everything before any data is touched.
"""

from __future__ import annotations

import itertools
import math
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config_base import Strict
from pipeline.config_sessions import SessionComparisonConfig, SessionConfig
from pipeline.policies import RESERVED_POLICY_NAMES, PolicySpec, make_policy_spec

METRIC_NAMES = ("AUC", "CTR", "Precision", "Recall", "NDCG", "MAP")

#: TextWiser components that work offline and deterministically.  Word/USE/Compound-pretrained options
#: download models at run time (forbidden here) and Doc2Vec/Random are not reproducible across runs.
OFFLINE_TEXT_EMBEDDINGS = ("tfidf", "bow")
OFFLINE_TEXT_TRANSFORMATIONS = ("svd", "nmf", "lda")


# --------------------------------------------------------------------------------------------- data
class EffectsConfig(Strict):
    """Weights of the hidden click model's terms (each term has unit spread before weighting)."""

    item_quality: float = Field(0.6, ge=0, description="item's own appeal, hinted by its text")
    segment_category: float = Field(0.8, ge=0, description="age group x gender affinity to categories")
    traffic_source_category: float = Field(0.4, ge=0, description="traffic source x category")
    time_category: float = Field(0.5, ge=0, description="daypart and weekend x category")
    device_category: float = Field(0.3, ge=0, description="device x category")
    style_affinity: float = Field(0.6, ge=0, description="membership tier and location x item style (in text)")
    price_sensitivity: float = Field(0.5, ge=0, description="non-linear in age: young and old users avoid high prices")
    nonlinear: float = Field(0.5, ge=0, description="random tanh network over user, context and item attributes")
    user_taste: float = Field(0.3, ge=0, description="per-user hidden taste no feature reveals (irreducible)")


class SyntheticConfig(Strict):
    n_users: int = Field(2000, ge=1)
    n_items: int = Field(200, ge=2)
    n_categories: int = Field(10, ge=2, le=10, description="categories used, from the 10 templates")
    n_events: int = Field(10_000, ge=10)
    n_days: int = Field(28, ge=1)
    start_date: date = date(2026, 1, 5)
    base_ctr: float = Field(0.05, gt=0, lt=1, description="mean click probability under uniform logging")
    seed: int | None = Field(None, description="data seed; null uses the top-level seed")
    effects: EffectsConfig = EffectsConfig()
    logging: Literal["uniform", "softmax"] = Field(
        "uniform", description="the logging policy that picks the shown item: uniform at random, or a softmax "
                               "over a noisy view of the true click logits (a production-like logger)")
    logging_temperature: float = Field(1.0, gt=0, description="softmax logging: lower is greedier")
    logging_noise: float = Field(1.0, ge=0, description="softmax logging: spread of the logger's per-item error")
    logging_uniform_share: float = Field(0.1, gt=0, le=1, description="softmax logging: share of events logged "
                                                                       "uniformly, so every item keeps support")
    slate_size: int = Field(1, ge=1, le=10, description="items shown per impression; above 1 the log is a slate log "
                                                        "(one row per slot, with position and slate_id) and clicks "
                                                        "follow the position-based model")
    slot_examination: list[float] | None = Field(
        None, description="slate logs: the probability that the user looks at each slot (click = examined x "
                          "attracted); null: 1/k for slot k")

    @model_validator(mode="after")
    def _slates(self) -> "SyntheticConfig":
        if self.slate_size > self.n_items:
            raise ValueError(f"slate_size ({self.slate_size}) exceeds n_items ({self.n_items})")
        if self.slate_size > 3 and self.logging == "softmax":
            raise ValueError("softmax logging of slates is limited to slate_size <= 3 (the item-position "
                             "propensities of a Plackett-Luce logger are computed exactly, at a cost that grows as "
                             "n_items ** (slate_size - 1)); use logging: uniform for longer slates")
        if self.slot_examination is not None:
            if len(self.slot_examination) != self.slate_size:
                raise ValueError(f"slot_examination has {len(self.slot_examination)} values; slate_size is "
                                 f"{self.slate_size}")
            if not all(0 < value <= 1 for value in self.slot_examination):
                raise ValueError(f"slot_examination values are probabilities in (0, 1]; got {self.slot_examination}")
        return self

    def examination(self) -> list[float]:
        """The probability of looking at each slot (slot 1 first)."""
        return self.slot_examination or [1.0 / (k + 1) for k in range(self.slate_size)]


class ColumnNames(Strict):
    """Names of the interaction columns in the user's files (renamed internally to the keys here)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    response: str = "response"
    propensity: str = Field("propensity", description="optional column; used when present; 'estimate' fits the "
                                                      "logging policy on the training rows instead")
    timestamp: str = Field("timestamp", description="optional column; needed by split.method=temporal")
    position: str = Field("position", description="optional column: the slot (1 = top) of a row when an impression "
                                                  "shows several items; enables the slate estimators")
    slate_id: str = Field("slate_id", description="optional column: groups the rows of one impression (with "
                                                  "position); enables SIPS, RIPS and PI")
    slate_propensity: str = Field("slate_propensity", description="optional column: the logging policy's "
                                                                  "probability of the whole slate (SIPS)")
    cascade_propensity: str = Field("cascade_propensity", description="optional column: the logging policy's "
                                                                      "probability of the slate's slots 1..position "
                                                                      "(RIPS)")

    @model_validator(mode="after")
    def _distinct_columns(self) -> "ColumnNames":
        used: dict[str, str] = {}
        for key, column in self.model_dump().items():
            if column in used:
                raise ValueError(f"'{used[column]}' and '{key}' both name the column {column!r}; each role needs a "
                                 "column of its own")
            used[column] = key
        return self


class FilesConfig(Strict):
    interactions: Path | None = Field(None, description="one file, split by time or folds")
    train: Path | None = Field(None, description="a separate train file (with test)")
    test: Path | None = Field(None, description="a separate test file (with train)")
    user_features: Path | None = None
    item_features: Path | None = None
    columns: ColumnNames = ColumnNames()
    event_context: list[str] = Field(
        default_factory=list,
        description="interaction columns that describe the moment (device, page...); makes each event a context",
    )
    reward_range: tuple[float, float] | None = Field(
        None, description="[low, high] a real-valued response can take (bounds its intervals); null: 0/1 clicks when "
                          "every response is 0 or 1, else the range observed in the data")
    unknown_users: Literal["error", "drop"] = Field(
        "error", description="interactions whose user is missing from user_features: error, or drop them (counted "
                             "in run.json and printed)")

    @model_validator(mode="after")
    def _one_layout(self) -> "FilesConfig":
        if self.reward_range is not None and not (math.isfinite(sum(self.reward_range))
                                                  and self.reward_range[0] < self.reward_range[1]):
            raise ValueError(f"reward_range must be [low, high] with finite low < high, not {list(self.reward_range)}")
        if self.interactions is not None and (self.train is not None or self.test is not None):
            raise ValueError("give either 'interactions' or 'train' and 'test', not both")
        if self.interactions is None and (self.train is None or self.test is None):
            raise ValueError("give 'interactions' (one file) or both 'train' and 'test'")
        return self


class DataConfig(Strict):
    source: Literal["synthetic", "files"] = "synthetic"
    synthetic: SyntheticConfig = SyntheticConfig()
    files: FilesConfig | None = None

    @model_validator(mode="after")
    def _files_given(self) -> "DataConfig":
        if self.source == "files" and self.files is None:
            raise ValueError("source is 'files' but the 'files' block is missing")
        return self


class SplitConfig(Strict):
    method: Literal["temporal", "kfold", "given"] | None = Field(
        None, description="null: 'given' with train/test files, else 'temporal'"
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of the latest events held out (temporal)")
    n_folds: int = Field(5, ge=2, description="folds for kfold; users never straddle folds")
    shuffle: bool = Field(True, description="kfold: shuffle users with the seed; false reproduces Mab2Rec's cv")


# ----------------------------------------------------------------------------------------- features
class ItemTextConfig(Strict):
    columns: list[str] = Field(default_factory=lambda: ["name", "description"],
                               description="left at the default, columns missing from the item table are skipped")
    text_schema: dict[str, Any] | list[Any] | str = Field(
        default_factory=lambda: {"transform": ["tfidf", ["svd", {"n_components": 16}]]},
        alias="schema",
        description="TextWiser schema",
    )

    @field_validator("text_schema")
    @classmethod
    def _offline_only(cls, schema: Any) -> Any:
        for component in _schema_components(schema):
            if component not in OFFLINE_TEXT_EMBEDDINGS + OFFLINE_TEXT_TRANSFORMATIONS:
                raise ValueError(
                    f"TextWiser component {component!r} is not supported: it needs a pretrained download or is not "
                    f"reproducible; use embeddings {OFFLINE_TEXT_EMBEDDINGS} then transformations "
                    f"{OFFLINE_TEXT_TRANSFORMATIONS}"
                )
        return schema


def _schema_components(schema: Any) -> list[str]:
    """Names of the embeddings/transformations in a TextWiser schema (str, [name, params], or dicts)."""
    if isinstance(schema, str):
        return [schema.lower()]
    if isinstance(schema, dict):
        if set(schema) - {"transform", "concat"} or len(schema) != 1:
            raise ValueError(f"a TextWiser schema block has one key, 'transform' or 'concat'; got {sorted(schema)}")
        return [name for part in next(iter(schema.values())) for name in _schema_components(part)]
    if isinstance(schema, list) and len(schema) == 2 and isinstance(schema[0], str) and isinstance(schema[1], dict):
        return [schema[0].lower()]
    raise ValueError(f"cannot read TextWiser schema part {schema!r}")


class FeaturesConfig(Strict):
    item_text: ItemTextConfig = ItemTextConfig()
    item_categorical: list[str] | None = Field(None, description="null: inferred from column types")
    item_numeric: list[str] | None = Field(None, description="null: inferred from column types")
    context_categorical: list[str] | None = Field(None, description="user + event context; null: inferred")
    context_numeric: list[str] | None = Field(None, description="user + event context; null: inferred")
    exclude: list[str] = Field(default_factory=list, description="feature columns to ignore")
    time_flags: bool = Field(False, description="add daypart and weekend flags from the timestamp (per event)")
    context_scaling: Literal["standard", "minmax", "none"] = Field(
        "standard", description="numeric context columns: standard (zero mean, unit variance on the fold's training "
                                "rows), minmax (0-1 on the training rows) or none (as given, like Mab2Rec)")
    item_scaling: Literal["standard", "minmax", "none"] = Field(
        "standard", description="numeric item columns, scaled over the catalog the same ways")
    one_hot_warning: int = Field(200, ge=1, description="a note when the categorical columns of the item, user or "
                                                        "event table become more one-hot columns than this")


# ----------------------------------------------------------------------------------------- policies
class PolicyConfig(Strict):
    learning_policy: str = Field(description="any MABWiser LearningPolicy name")
    params: dict[str, Any] = Field(default_factory=dict, description="its parameters (alpha, epsilon, ...)")
    neighborhood_policy: str | None = Field(None, description="any MABWiser NeighborhoodPolicy name")
    neighborhood_params: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="parameter -> values: one policy per "
                                                                         "combination, e.g. {alpha: [0.1, 1.0]}")

    @field_validator("grid")
    @classmethod
    def _non_empty_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [name for name, values in grid.items() if not values]
        if empty:
            raise ValueError(f"grid values must be non-empty lists; {empty[0]!r} has none")
        return grid

    @model_validator(mode="after")
    def _known_to_mabwiser(self) -> "PolicyConfig":
        self.to_specs("check")
        return self

    def to_specs(self, name: str) -> list[PolicySpec]:
        """One spec, or one per combination of ``grid`` values (named ``NAME(alpha=0.1, ...)``), each
        validated by MABWiser like a hand-written entry."""
        fields = self.model_dump(exclude={"grid"})
        if not self.grid:
            return [make_policy_spec(name, **fields)]
        specs = []
        for values in itertools.product(*self.grid.values()):
            chosen = dict(zip(self.grid, values))
            label = f"{name}({', '.join(f'{key}={value}' for key, value in chosen.items())})"
            specs.append(make_policy_spec(label, **{**fields, "params": {**self.params, **chosen}}))
        return specs


def default_policies() -> dict[str, PolicyConfig]:
    return {
        "Random": PolicyConfig(learning_policy="Random"),
        "Popularity": PolicyConfig(learning_policy="Popularity"),
        "LinGreedy": PolicyConfig(learning_policy="LinGreedy", params={"epsilon": 0.1, "l2_lambda": 1.0}),
        "LinUCB": PolicyConfig(learning_policy="LinUCB", params={"alpha": 1.0, "l2_lambda": 1.0}),
        "LinTS": PolicyConfig(learning_policy="LinTS", params={"alpha": 1.0, "l2_lambda": 1.0}),
        "ClustersTS": PolicyConfig(
            learning_policy="ThompsonSampling", neighborhood_policy="Clusters", neighborhood_params={"n_clusters": 10}
        ),
        "NeuralLinear-cold": PolicyConfig(learning_policy="NeuralLinear", params={"warm_start": "none"}),
        "NeuralLinear-warm": PolicyConfig(learning_policy="NeuralLinear", params={"warm_start": "bpr"}),
        "NeuralLinUCB": PolicyConfig(learning_policy="NeuralLinear",
                                     params={"warm_start": "bpr", "decision": "ucb", "alpha": 1.0}),
    }


# --------------------------------------------------------------------------------------- evaluation
class OffPolicyConfig(Strict):
    enabled: bool = Field(True, description="off-policy estimates of each policy's first item and top-k list "
                                            "(k = leaderboard_k) when the log has propensities")
    reward_model: Literal["logistic", "item_mean"] = Field("logistic", description="r_hat of the DR-type estimators")
    cross_fit: int = Field(2, ge=1, description="parts of the test contexts; each part's r_hat is fitted on the "
                                                "training rows and the other parts (1: training rows only)")
    action_samples: int = Field(50, ge=1, description="Monte Carlo draws of a sampling policy's lists per "
                                                       "context, for its action probabilities")
    switch_tau_per_item: float = Field(2.0, gt=0, description="Switch-DR drops the correction of events whose "
                                                              "weight exceeds this x the number of items")
    min_effective_sample_size: float = Field(30.0, ge=1, description="below it an estimate is flagged unreliable")
    max_weight_share: float = Field(0.2, gt=0, le=1, description="largest single weight over the sum of weights "
                                                                 "above which an estimate is flagged unreliable")
    max_mean_weight_gap: float = Field(0.1, gt=0, description="an estimate is flagged when its mean importance "
                                                              "weight (1 under full support) is significantly "
                                                              "farther than this from 1")
    min_effective_clicks: float = Field(10.0, ge=0, description="an estimate resting on fewer effective clicks "
                                                                "(Kish's count of its weighted clicks) is flagged")
    max_unsupported_share: float = Field(0.01, ge=0, le=1, description="share of the policy's choices on items the "
                                                                       "log never shows, above which it is flagged")


class ReplayConfig(Strict):
    """Replay with learning: each policy walks the test log in time order, learning from the events it matches."""

    enabled: bool = Field(False, description="write each policy's online CTR curve estimated from the log")
    batch_size: int = Field(100, ge=1, description="accepted events between two partial_fit calls")


class ExternalPolicyConfig(Strict):
    """A policy run elsewhere, evaluated from its action probabilities on the logged test events."""

    file: Path = Field(description="CSV/Parquet: row, item column, [position], probability (or score)")
    rule: Literal["probabilities", "argmax", "softmax"] = Field(
        "probabilities", description="probabilities: the file's 'probability' column; argmax/softmax: from 'score'")
    temperature: float = Field(1.0, gt=0, description="softmax: exp(score / temperature)")


class DecisionConfig(Strict):
    """Which policy to ship: the metric the decision rests on and the baseline each policy is compared with."""

    metric: Literal["auto", "truth", "off_policy", "replay"] = Field(
        "auto", description="auto: the true value on synthetic data, else the off-policy estimate of the list's "
                            "value, else replay CTR (flagged, and refused under non-uniform logging)")
    estimator: Literal["auto", "IPS", "SNIPS", "DR", "SNDR", "SwitchDR"] = Field(
        "auto", description="the off-policy estimator the decision uses; auto: the one with the smallest "
                            "estimated mean squared error on this log (offpolicy/selection.py)")
    slate_estimator: Literal["auto", "IIPS", "SN-IIPS", "SIPS", "SN-SIPS", "RIPS", "SN-RIPS", "PI"] = Field(
        "auto", description="the estimator the decision uses on a slate log (a position column): the slate's "
                            "click rate per slot; auto: the smallest estimated mean squared error among those the "
                            "log supports")
    baseline: str | None = Field("Logging", description="policy every candidate is compared with; Logging is the "
                                                        "policy that wrote the log (null: none)")
    min_lift: float = Field(0.05, gt=0, description="the smallest lift over the baseline worth detecting, relative "
                                                    "to its value: when nothing beats the baseline, the decision says "
                                                    "how many logged events would detect it")


class EvaluationConfig(Strict):
    top_k: int = Field(10, ge=1, description="length of each recommendation list")
    k_list: list[int] = Field(default_factory=lambda: [1, 3, 5, 10], description="cut-offs for every metric")
    leaderboard_k: int = Field(5, ge=1, description="the k shown on the leaderboard")
    metrics: list[Literal[METRIC_NAMES]] = Field(
        default_factory=lambda: list(METRIC_NAMES)
    )
    ground_truth: bool = Field(True, description="score policies with the synthetic click model")
    warm_start: bool = Field(False, description="Mab2Rec warm start of cold items from item features")
    warm_start_distance: float | None = Field(None, ge=0, le=1)
    batch_size: int = Field(100_000, ge=1, description="Mab2Rec batch size")
    engine: Literal["fast", "mab2rec"] = Field(
        "fast", description="fast: batched matrix scoring (same lists as Mab2Rec for deterministic policies, same "
                            "distribution for sampling ones); mab2rec: Mab2Rec's own train/score, the reference")
    oracle_events: int | None = Field(
        20_000, ge=1, description="test events the Oracle (and true_regret) is computed on, a seeded random "
                                  "sample when there are more; null: all")
    bootstrap_resamples: int = Field(200, ge=0, description="resamples for every metric's 95% interval; 0: none")
    beyond_accuracy: bool = Field(True, description="diversity, catalog coverage and novelty of the lists")
    diversity_sample: int = Field(1000, ge=2, description="contexts Jurity samples per diversity run")
    off_policy: OffPolicyConfig = OffPolicyConfig()
    decision: DecisionConfig = DecisionConfig()
    replay: ReplayConfig = ReplayConfig()
    external_policies: dict[str, ExternalPolicyConfig] = Field(
        default_factory=dict, description="policies run elsewhere, by name: evaluated off-policy from a file of "
                                          "their action probabilities per logged event")

    @model_validator(mode="after")
    def _consistent_k(self) -> "EvaluationConfig":
        if not self.k_list or min(self.k_list) < 1:
            raise ValueError(f"k_list must hold positive integers; got {self.k_list}")
        if max(self.k_list) > self.top_k:
            raise ValueError(f"every k in k_list must be <= top_k={self.top_k}; got k_list={self.k_list}")
        if self.leaderboard_k not in self.k_list:
            raise ValueError(f"leaderboard_k={self.leaderboard_k} must be one of k_list={self.k_list}")
        if self.warm_start != (self.warm_start_distance is not None):
            raise ValueError("warm_start: true needs warm_start_distance (0 to 1), and false needs it unset")
        return self


class SimulationConfig(Strict):
    """Online simulation against the synthetic click model (synthetic data only)."""

    enabled: bool = False
    steps: int = Field(20_000, ge=1, description="events the policies serve, after the warm-up")
    batch_size: int = Field(500, ge=1, description="events between two partial_fit calls")
    warmup: int = Field(500, ge=1, description="uniformly random events every policy is first fitted on")
    rolling_window: int = Field(2_000, ge=1, description="steps in the rolling CTR")
    scenario: Literal["stationary", "shock"] = "stationary"
    shock_step: int = Field(10_000, ge=1, description="step at which the click model changes (scenario: shock)")
    shock_strength: float = Field(1.0, ge=0, le=1, description="0: no change, 1: brand-new tastes")
    recovery_share: float = Field(0.9, gt=0, le=1, description="recovered when the share of Oracle's rolling "
                                                              "CTR is back to this fraction of its pre-shock value")
    policies: list[str] | None = Field(None, description="policies to simulate; null: all")
    sessions: SessionConfig = SessionConfig()
    session_comparison: SessionComparisonConfig = SessionComparisonConfig()

    @model_validator(mode="after")
    def _shock_inside(self) -> "SimulationConfig":
        if self.scenario == "shock" and self.shock_step >= self.steps:
            raise ValueError(f"shock_step={self.shock_step} must be below steps={self.steps}")
        return self


class ExecutorConfig(Strict):
    """Where the grid of (seed x fold x policy) tasks runs; results are identical whichever is chosen."""

    kind: Literal["local", "ray"] = Field("local", description="local: this machine's processes; ray: Ray tasks "
                                                               "on the cluster RAY_ADDRESS names (local if unset)")
    workers: int | None = Field(None, ge=1, description="local: parallel processes (null: one per CPU core for "
                                                        "folds of 100k+ events, else in-process)")
    threads_per_task: int | None = Field(None, ge=1, description="BLAS/PyTorch threads inside each task (null: "
                                                                  "the cores shared among the workers); set it "
                                                                  "for bit-identical results across machines")


class RunConfig(Strict):
    output_dir: Path = Path("runs")
    name: str | None = Field(None, description="run name prefix; null uses the config file's name")
    cache: bool = Field(True, description="reuse context features from OUTPUT_DIR/.cache when the data, split "
                                          "and feature config are the same as in an earlier run")

    @field_validator("name")
    @classmethod
    def _usable_as_a_folder_name(cls, name: str | None) -> str | None:
        if name is not None and (not name.strip() or len(name) > 100
                                 or any(c in name for c in '/\\') or not name.isprintable()):
            raise ValueError("run.name becomes part of a folder name: 1 to 100 printable characters without / or \\")
        return name


class PipelineConfig(Strict):
    seed: int = Field(42, description="seeds the data generator, splits, features and every policy")
    seeds: list[int] | None = Field(None, description="repeat the whole run once per seed (overrides seed)")
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    features: FeaturesConfig = FeaturesConfig()
    policies: dict[str, PolicyConfig] = Field(default_factory=default_policies)
    evaluation: EvaluationConfig = EvaluationConfig()
    simulation: SimulationConfig = SimulationConfig()
    executor: ExecutorConfig = ExecutorConfig()

    @field_validator("policies")
    @classmethod
    def _valid_policy_names(cls, policies: dict[str, PolicyConfig]) -> dict[str, PolicyConfig]:
        if not policies:
            raise ValueError("at least one policy is needed")
        reserved = sorted(set(policies) & RESERVED_POLICY_NAMES)
        if reserved:
            raise ValueError(f"the policy name {reserved[0]!r} is reserved for a row the pipeline adds (Oracle: the "
                             "ground truth; Logging: the policy that wrote the log); choose another")
        return policies

    @model_validator(mode="after")
    def _distinct_expanded_names(self) -> "PipelineConfig":
        names = [spec.name for spec in self.policy_specs()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"policy name {repeated[0]!r} appears twice once grids are expanded; rename one")
        clash = sorted(set(self.evaluation.external_policies) & (set(names) | RESERVED_POLICY_NAMES))
        if clash:
            raise ValueError(f"evaluation.external_policies: {clash[0]!r} is already the name of a policy (or a row "
                             "the pipeline adds); give the external policy another name")
        baseline = self.evaluation.decision.baseline
        known = set(names) | set(self.evaluation.external_policies) | {"Logging"}
        if baseline is not None and baseline not in known:
            raise ValueError(f"evaluation.decision.baseline is {baseline!r}, which is not a policy of this config; "
                             f"choose one of {sorted(known)} or null")
        return self

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_shorthand(cls, value):
        return {"kind": value} if isinstance(value, str) else value  # "executor: ray" means {kind: ray}

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise ValueError(f"seeds must be a non-empty list of distinct integers; got {seeds}")
        return seeds

    @model_validator(mode="after")
    def _simulation_needs_truth(self) -> "PipelineConfig":
        if self.simulation.enabled and self.data.source != "synthetic":
            raise ValueError("simulation.enabled needs data.source: synthetic (the simulation draws clicks from the "
                             "generator's click model)")
        unknown = sorted(set(self.simulation.policies or []) - set(self.policies))
        if unknown:
            raise ValueError(f"simulation.policies names {unknown}, which are not in policies ({', '.join(self.policies)})")
        return self

    @model_validator(mode="after")
    def _session_comparison_fits(self) -> "PipelineConfig":
        settings = self.simulation.session_comparison
        if not settings.enabled:
            return self
        if self.data.source != "synthetic":
            raise ValueError("simulation.session_comparison needs data.source: synthetic (its users are simulated "
                             "from the generator's click model)")
        unknown = sorted(set(settings.policies or []) - set(self.policies))
        if unknown:
            raise ValueError(f"simulation.session_comparison.policies names {unknown}, which are not in policies "
                             f"({', '.join(self.policies)})")
        if not set(self.seed_list) - set(settings.tuning_seeds):
            raise ValueError(f"simulation.session_comparison.tuning_seeds {settings.tuning_seeds} leaves none of the "
                             f"run's seeds {self.seed_list} to report on; add seeds (seeds: [...])")
        agents = {"Oracle", *settings.rl_agents, *(settings.policies or [s.name for s in self.policy_specs()])}
        for role in ("control", "treatment"):
            name = getattr(settings.ab_test, role)
            if name is not None and name not in agents:
                raise ValueError(f"simulation.session_comparison.ab_test.{role}: {name!r} is not one of the "
                                 f"comparison's agents ({', '.join(sorted(agents))})")
        return self

    @model_validator(mode="after")
    def _lists_fit_the_catalog(self) -> "PipelineConfig":
        n_items = self.data.synthetic.n_items
        if self.data.source == "synthetic" and self.evaluation.top_k > n_items:
            raise ValueError(f"evaluation.top_k={self.evaluation.top_k} is more than data.synthetic.n_items={n_items}: "
                             "no list can hold more different items than the shop has; set evaluation.top_k and "
                             f"every k in evaluation.k_list (now {self.evaluation.k_list}) to at most {n_items}")
        return self

    @model_validator(mode="after")
    def _split_matches_data(self) -> "PipelineConfig":
        separate_files = self.data.source == "files" and self.data.files.train is not None
        if separate_files and self.split.method not in (None, "given"):
            raise ValueError(f"split.method={self.split.method!r} needs one interactions file; train/test files use 'given'")
        if not separate_files and self.split.method == "given":
            raise ValueError("split.method='given' needs data.files.train and data.files.test")
        return self

    # ----------------------------------------------------------------------------------- derived
    @property
    def split_method(self) -> str:
        if self.split.method is not None:
            return self.split.method
        return "given" if self.data.source == "files" and self.data.files.train is not None else "temporal"

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds else [self.seed]

    @property
    def data_seed(self) -> int:
        return self.seed if self.data.synthetic.seed is None else self.data.synthetic.seed

    def policy_specs(self) -> list[PolicySpec]:
        """Every policy to evaluate, ``grid`` entries expanded."""
        return [spec for name, policy in self.policies.items() for spec in policy.to_specs(name)]

    def resolved(self) -> dict[str, Any]:
        """The full config with every default filled in, as plain YAML-able data."""
        data = self.model_dump(mode="json", by_alias=True)
        data["split"]["method"] = self.split_method
        if self.data.source == "files":
            del data["data"]["synthetic"]  # unused, and misleading next to the user's files
        return data


# The loader (YAML, --set, error messages) is its own module; imported last because it needs the schema above.
from pipeline.config_loading import load_config, read_yaml  # noqa: E402,F401
