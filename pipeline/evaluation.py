"""Evaluation stage: train and score each policy as Mab2Rec's ``benchmark`` does, measure it with Jurity's
metrics, and, on synthetic data, score its recommendations against the hidden click model.

Replay metrics (Jurity's AUC, CTR, Precision, Recall, NDCG, MAP at k) equal what a user calling
``mab2rec.pipeline.benchmark`` gets (tests compare them); they are computed from the lists by
``pipeline.uncertainty.replay_details`` (Jurity's definitions, one sort instead of ``CombinedMetrics``).
Ground-truth metrics use the click model's probability of the listed items for every test event:

- ``true_ctr@k``: mean true click probability of the policy's top-k items (``true_ctr@1`` is the value of
  showing its first item);
- ``true_hit_rate@k``: probability of at least one click on the top-k list, ``1 - prod(1 - p_i)``, with
  clicks on different slots taken as independent;
- ``true_regret@k``: the Oracle's ``true_ctr@k`` minus the policy's;
- on a slate log of L slots, ``true_slate_ctr@L``: the clicks per slot its top-L list would get in the log's
  impressions, ``(1/L) sum_k theta_k p_k`` with ``theta_k`` the chance slot k is looked at.

The ``Oracle`` row recommends, for every test event (or a seeded sample of ``oracle_events``), the items
with the highest true probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from mab2rec import BanditRecommender
from mab2rec.pipeline import score, train
from mabwiser.mab import NeighborhoodPolicy

from pipeline.config import EvaluationConfig
from pipeline.data.dataset import CONTEXT_ID, EVENT_ID, ITEM_ID, RESPONSE, Dataset
from pipeline.data.synthetic_slates import logged_slot_values
from pipeline.errors import ConfigError
from pipeline.features import FoldFeatures
from pipeline.policies import REAL_REWARD_POLICIES, PolicySpec, accepted_rewards, learns_from
from pipeline.rewards import BINARY_ONLY_METRICS, RewardScale
from pipeline.scoring import ScoringInput, recommend_all, scorer_for
from pipeline.uncertainty import METRIC_RULES, Bootstrap, interval_of, replay_details

SCORE = "score"  # Mab2Rec's name for the recommendation score, and the click column Jurity compares
ORACLE = "Oracle"
TRUE_SLATE_CTR = "true_slate_ctr"  # slate logs: a list's clicks per slot in the log's impressions (position-based)
LOGGING = "Logging"  # the policy that wrote the log
METRIC_COLUMNS = ["policy", "metric", "k", "fold", "value", "low", "high", "support"]


@dataclass(frozen=True)
class ReplayMetric:
    name: str
    k: int
    jurity: object

    @property
    def label(self) -> str:
        return str(self.jurity)  # the key Jurity's CombinedMetrics reports it under, e.g. "AUC(score)@5"


def replay_metrics(config: EvaluationConfig) -> list[ReplayMetric]:
    params = dict(click_column=SCORE, user_id_column=CONTEXT_ID, item_id_column=ITEM_ID)
    return [ReplayMetric(name, k, METRIC_RULES[name].jurity(k=k, **params))
            for k in config.k_list for name in config.metrics]


@dataclass
class PolicyRun:
    """One policy on one fold: its metric rows, its ranked top-k lists and the trained recommender."""

    metrics: pd.DataFrame
    recommendations: pd.DataFrame
    recommender: BanditRecommender
    scorer: object = None  # the fast scorer that ranked the lists (None: Mab2Rec's own path)
    draws: dict = field(default_factory=dict)  # bootstrap draws of CTR@k, for paired differences


def check_inputs(policies: list[PolicySpec], features: FoldFeatures, item_vectors: pd.DataFrame | None,
                 config: EvaluationConfig, dataset: Dataset, fold: int) -> None:
    """Fail with a clear message where Mab2Rec would fail with a generic one (or silently differ)."""
    if config.warm_start and item_vectors is None:
        raise ConfigError("evaluation.warm_start is true but the data has no item features to warm start from "
                          "(data.files.item_features)")
    # Mab2Rec's arms are the items of the training rows (the whole catalog with warm start).  A list longer than
    # that cannot be filled: its metrics at k would be those of a shorter list under a false label (Recall@50 =
    # 1 with 40 items), and the Oracle's k best items would not be comparable to them.
    arms = len(item_vectors) if config.warm_start else features.train[ITEM_ID].nunique()
    if config.top_k > arms:
        where = "the catalog" if config.warm_start else f"the training rows of fold {fold}"
        raise ConfigError(f"evaluation.top_k={config.top_k} but {dataset.source('interactions')} offers only {arms} "
                          f"item(s) to recommend ({where}), so no list can hold {config.top_k} different items; set "
                          f"evaluation.top_k and every k in evaluation.k_list (now {config.k_list}) to at most {arms}")
    for spec in policies:
        needed, reason = _rows_needed(spec)
        if needed > len(features.train):
            raise ConfigError(f"policy {spec.name!r} needs at least {needed} training rows ({reason}) but "
                              f"fold {fold} of {dataset.source('interactions')} has {len(features.train)}; use more "
                              "events or lower that parameter")
    for spec in policies:
        if not learns_from(spec, dataset.reward.low, dataset.reward.binary):
            raise ConfigError(f"policy {spec.name!r} ({spec.description}) learns from {accepted_rewards(spec)} "
                              f"rewards, but {dataset.source('interactions')} holds {dataset.reward.describe()}; "
                              f"remove it, or use one that takes real rewards ({REAL_REWARD_POLICIES})")
    contextual = [spec.name for spec in policies if spec.is_contextual]
    if contextual and features.contexts is None:
        raise ConfigError(f"policies {contextual} need context features, but {dataset.source('interactions')} has "
                          "no user features (data.files.user_features) and no event context "
                          "(data.files.event_context); add one or remove those policies")


def _rows_needed(spec: PolicySpec) -> tuple[int, str]:
    """Training rows a neighborhood policy needs to be fitted at all, and why (KMeans: one per cluster, k-NN: k)."""
    neighborhood = spec.neighborhood_policy
    if isinstance(neighborhood, NeighborhoodPolicy.Clusters):
        return neighborhood.n_clusters, f"KMeans with n_clusters={neighborhood.n_clusters} needs a row per cluster"
    if isinstance(neighborhood, NeighborhoodPolicy.KNearest):
        return neighborhood.k, f"KNearest with k={neighborhood.k} needs k rows"
    return 1, "a policy learns from at least one row"


def run_policy(spec: PolicySpec, features: FoldFeatures, item_vectors: pd.DataFrame | None, fold: int,
               config: EvaluationConfig, seed: int, bootstrap: Bootstrap) -> PolicyRun:
    """Train ``spec`` on the fold's training rows and score it on its test rows.

    These are the steps of Mab2Rec's ``benchmark`` for one recommender (train, score, metrics) called one by
    one, so that the trained recommender stays available (for export and diagnostics); a test checks the
    metrics equal ``benchmark``'s.  ``engine: mab2rec`` calls Mab2Rec's own ``train`` and ``score``;
    ``engine: fast`` (the default) trains with ``fit_in_batches`` and scores through ``pipeline.scoring``
    wherever a fast scorer exists (Mab2Rec's ``score`` otherwise).
    """
    columns = [CONTEXT_ID, ITEM_ID, RESPONSE]
    recommender = spec.build(top_k=config.top_k, seed=seed, item_features=item_vectors)
    common = dict(
        user_features=features.contexts,
        item_features=item_vectors if config.warm_start else None,
        # Without warm start Mab2Rec's arms are the trained items; with it, the whole catalog, so that cold items
        # exist as arms and can borrow the model of their nearest trained item.
        item_list=item_vectors[ITEM_ID].tolist() if config.warm_start else None,
        warm_start=config.warm_start,
        warm_start_distance=config.warm_start_distance,
        user_id_col=CONTEXT_ID,
        item_id_col=ITEM_ID,
        response_col=RESPONSE,
        batch_size=config.batch_size,
    )
    fast = config.engine == "fast" and not config.warm_start
    if fast:
        fit_in_batches(recommender, spec, features, config.batch_size)
    else:
        train(recommender, features.train[columns], **common)
    scorer = scorer_for(recommender) if fast else None
    if scorer is not None:
        inputs = ScoringInput.of(features, contextual=recommender.mab.is_contextual)
        recommendations = recommend_all(scorer, inputs, config.top_k, seed)
    else:
        recommendations = score(recommender, features.test[columns], **common)
    draws = {}
    metrics = replay_metric_rows(recommendations, features, config, spec.name, fold, bootstrap, draws)
    return PolicyRun(metrics, ranked(recommendations, spec.name, fold), recommender, scorer, draws)


def fit_in_batches(recommender: BanditRecommender, spec: PolicySpec, features: FoldFeatures, batch_size: int) -> None:
    """Mab2Rec's ``train`` (same arms, same batches, the same ``fit``/``partial_fit`` calls, so the same model)
    without its per-batch pandas merge of the context features: rows are taken from the feature table by
    position, which holds one batch's contexts in memory instead of three copies.

    MABWiser's Clusters refits KMeans and every cluster's policy on all rows seen so far at each
    ``partial_fit``, so for it one fit on all rows gives the model Mab2Rec's batches give, once instead of
    once per batch (8 KMeans runs at 800k rows).
    """
    train = features.train
    recommender.set_arms(train[ITEM_ID].unique().tolist())  # Mab2Rec's arms: the trained items, in order
    decisions, rewards = train[ITEM_ID].to_numpy(), train[RESPONSE].to_numpy()
    rewards = rewards.astype(int) if features.reward.binary else rewards.astype(float)  # 0/1 as Mab2Rec passes them
    context_ids = train[CONTEXT_ID].to_numpy()
    n_batches = 1 if isinstance(spec.neighborhood_policy, NeighborhoodPolicy.Clusters) else max(1, len(train) // batch_size)
    for rows in np.array_split(np.arange(len(train)), n_batches):
        contexts = features.context_matrix(context_ids[rows]) if recommender.mab.is_contextual else None
        learn = recommender.partial_fit if recommender.mab._is_initial_fit else recommender.fit
        learn(decisions[rows], rewards[rows], contexts)


def replay_metric_rows(recommendations: pd.DataFrame, features: FoldFeatures, config: EvaluationConfig, policy: str,
                       fold: int, bootstrap: Bootstrap, draws: dict | None = None) -> pd.DataFrame:
    """Jurity's replay metrics of one policy's lists (computed by ``replay_details``, tested equal to Jurity's
    ``CombinedMetrics``), with bootstrap intervals and support."""
    actual = features.test[[CONTEXT_ID, ITEM_ID, RESPONSE]].rename(columns={RESPONSE: SCORE})
    predicted = recommendations[[CONTEXT_ID, ITEM_ID, SCORE]]
    details = replay_details(actual, predicted, [(name, k) for k in config.k_list for name in metrics_for(config,
                                                                                                    features.reward)],
                             bootstrap, draws, features.reward)
    return details.assign(policy=policy, fold=fold)[METRIC_COLUMNS]


def metrics_for(config: EvaluationConfig, reward: RewardScale) -> list[str]:
    """The configured replay metrics defined for this reward: all of them for 0/1 clicks, CTR (the mean reward
    of the matched events) for real-valued rewards (``rewards.BINARY_ONLY_METRICS`` count relevant items)."""
    return [name for name in config.metrics if reward.binary or name not in BINARY_ONLY_METRICS]


def ranked(recommendations: pd.DataFrame, policy: str, fold: int) -> pd.DataFrame:
    """Mab2Rec's exploded top-k lists (best first within each context) with an explicit 0-based rank."""
    frame = recommendations[[CONTEXT_ID, ITEM_ID, SCORE]].reset_index(drop=True)
    frame.insert(0, "rank", frame.groupby(CONTEXT_ID, sort=False).cumcount())
    frame.insert(0, "policy", policy)
    frame.insert(0, "fold", fold)
    return frame


# ------------------------------------------------------------------------------------ ground truth
class GroundTruth:
    """The click model's view of one fold's test events, and the scores derived from it.

    A policy's ``true_ctr`` and ``true_hit_rate`` need only the probabilities of the items it listed (one
    click-model call per listed pair); the Oracle needs every item for every event, so it is computed on
    at most ``oracle_events`` test events (a seeded random sample beyond that: 1,000 items x 200k events
    would be 200M click-model calls), and ``true_regret`` on the same events.  ``support`` says how many.
    """

    def __init__(self, dataset: Dataset, features: FoldFeatures, k_values: list[int], top_k: int,
                 oracle_events: int | None = None, seed: int = 0):
        self.model = dataset.click_model
        first = ~features.test[CONTEXT_ID].duplicated().to_numpy()  # one event per context (a slate's rows share one)
        self.contexts = features.test[CONTEXT_ID].to_numpy()[first]
        self.events = features.test[EVENT_ID].to_numpy()[first]
        self.event_table = dataset.interactions.set_index(EVENT_ID).loc[self.events].reset_index()
        self.slate_size = dataset.slate_size  # slate logs: the value of a list in the log's impressions too
        self.item_ids = self.model.item_ids
        self.k_values = sorted(set([1, *k_values]))
        n = len(self.events)
        self.oracle_rows = np.arange(n)
        if oracle_events is not None and n > oracle_events:
            self.oracle_rows = np.sort(np.random.default_rng([seed, 11]).choice(n, oracle_events, replace=False))
        self.best, self.best_probabilities = self.model.best_items(self.event_table.iloc[self.oracle_rows], top_k)
        self.oracle_ctr = {k: self.best_probabilities[:, :k].mean(axis=1) for k in self.k_values}  # per sampled event

    @property
    def oracle_events(self) -> np.ndarray:
        """The contexts the Oracle is computed on (events, or impressions of a slate log)."""
        return self.contexts[self.oracle_rows]

    def oracle(self, fold: int) -> pd.DataFrame:
        """The Oracle's recommendations: the items with the highest true probability, best first."""
        width = self.best.shape[1]
        return pd.DataFrame({
            "fold": fold, "policy": ORACLE, "rank": np.tile(np.arange(width), len(self.oracle_rows)),
            CONTEXT_ID: np.repeat(self.oracle_events, width), ITEM_ID: self.item_ids[self.best.ravel()],
            SCORE: self.best_probabilities.ravel(),
        })

    def metric_rows(self, recommendations: pd.DataFrame, policy: str, fold: int, bootstrap: Bootstrap,
                    draws: dict | None = None) -> pd.DataFrame:
        """``true_ctr``, ``true_hit_rate`` and ``true_regret`` at every k (and ``true_slate_ctr`` at the slate
        size of a slate log), with bootstrap intervals (and, into ``draws``, ``true_ctr@k``'s and
        ``true_slate_ctr@L``'s bootstrap draws for paired differences)."""
        width = max(self.k_values + [self.slate_size or 1])
        if policy == ORACLE:  # its lists are the sampled events' best items, whose probabilities are known
            probs, events = self.best_probabilities[:, :width], self.oracle_events
        else:  # a policy is scored on every test context; a slot it left empty earns nothing
            row_of_event = pd.Series(np.arange(len(self.contexts)), index=self.contexts)
            probs, events = np.zeros((len(self.contexts), width)), self.contexts
            shown = recommendations[recommendations["rank"] < width]
            rows = row_of_event.loc[shown[CONTEXT_ID].to_numpy()].to_numpy()
            columns = self.model.item_positions(shown[ITEM_ID].to_numpy())
            probs[rows, shown["rank"].to_numpy()] = self.model.pair_probabilities(self.event_table, rows, columns)
        on_oracle_events = slice(None) if policy == ORACLE else self.oracle_rows  # where true_regret is known
        out = []
        for k in self.k_values:
            ctr = probs[:, :k].mean(axis=1)
            per_event = {"true_ctr": (ctr, events), "true_hit_rate": (1 - np.prod(1 - probs[:, :k], axis=1), events),
                         "true_regret": (self.oracle_ctr[k] - ctr[on_oracle_events], self.oracle_events)}
            for name, (values, on) in per_event.items():
                resampled = bootstrap.mean_draws(values, on)
                interval = interval_of(resampled)
                if name == "true_ctr" and draws is not None and resampled is not None:
                    draws[f"true_ctr@{k}"] = resampled
                out.append((policy, name, k, fold, float(values.mean()), *interval, len(values)))
        if self.slate_size is not None and probs.shape[1] >= self.slate_size:
            out.append(self.slate_row(probs[:, :self.slate_size] * self.model.examination, policy, fold, events,
                                       bootstrap, draws))
        return pd.DataFrame(out, columns=METRIC_COLUMNS)

    def slate_row(self, clicks: np.ndarray, policy: str, fold: int, on: np.ndarray, bootstrap: Bootstrap,
                   draws: dict | None) -> tuple:
        """``true_slate_ctr@L``: the list's expected clicks per slot in the log's L-slot impressions, from each
        slot's click probability there, (contexts, L)."""
        values = clicks.mean(axis=1)
        resampled = bootstrap.mean_draws(values, on)
        if draws is not None and resampled is not None:
            draws[f"{TRUE_SLATE_CTR}@{self.slate_size}"] = resampled
        return (policy, TRUE_SLATE_CTR, self.slate_size, fold, float(values.mean()), *interval_of(resampled),
                len(values))


def logging_truth_rows(truth: GroundTruth, fold: int, bootstrap: Bootstrap, draws: dict) -> pd.DataFrame:
    """``true_ctr`` of the logging policy at every k, on the Oracle's events: ``sum_a p(a | x) r(x, a)`` per event
    when it shows one item (its top-k value is that of the one item); on a slate log the mean over its first k
    slots (all L beyond L) of ``sum_a mu(a at slot | x) r(x, a)``, and its ``true_slate_ctr@L``."""
    events = truth.event_table.iloc[truth.oracle_rows]
    slots = (logged_slot_values(truth.model, events, truth.slate_size) if truth.slate_size is not None
             else truth.model.logged_value(events)[:, None])
    rows, by_width = [], {}
    for k in truth.k_values:
        width = min(k, slots.shape[1])  # one-item logs: the same values (and resamples) at every k
        if width not in by_width:
            values = slots[:, :width].mean(axis=1)
            by_width[width] = values, bootstrap.mean_draws(values, truth.oracle_events)
        values, resampled = by_width[width]
        if resampled is not None:
            draws[f"true_ctr@{k}"] = resampled
        rows.append((LOGGING, "true_ctr", k, fold, float(values.mean()), *interval_of(resampled), len(values)))
    if truth.slate_size is not None:
        rows.append(truth.slate_row(slots * truth.model.examination, LOGGING, fold, truth.oracle_events, bootstrap,
                                     draws))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def oracle_replay_rows(oracle: pd.DataFrame, features: FoldFeatures, config: EvaluationConfig, fold: int,
                       bootstrap: Bootstrap) -> pd.DataFrame:
    """Jurity's replay metrics for the Oracle's lists (on the events it was computed for), to show the ceiling
    the replay metrics can reach."""
    listed = features.test[features.test[CONTEXT_ID].isin(oracle[CONTEXT_ID].unique())]
    return replay_metric_rows(oracle, replace(features, test=listed), config, ORACLE, fold, bootstrap)
