"""One pipeline run: data -> split -> features -> policies -> evaluation -> run directory.

With ``seeds: [...]`` the whole run (data, split, features, policies) is repeated once per seed inside
one run directory; every table carries a ``seed`` column.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from pipeline.config import PipelineConfig
from pipeline.data import load_dataset
from pipeline.data.dataset import (CASCADE_PROPENSITY, CONTEXT_ID, EVENT_ID, ITEM_ID, POSITION, PROPENSITY, RESPONSE,
                                   SLATE_ID, SLATE_PROPENSITY, TIMESTAMP)
from pipeline.decision_stage import DecisionInputs, decision_stage, leaderboard_estimators
from pipeline.evaluation import LOGGING, ORACLE, TRUE_SLATE_CTR, GroundTruth, check_inputs, logging_truth_rows, oracle_replay_rows
from pipeline.executor import FoldContext, decision_draws, decision_ks, make_executor
from pipeline.errors import ConfigError
from pipeline import layout
from pipeline.features import feature_notes, fold_features, item_featurizer, item_vectors
from pipeline.offpolicy import (SLATE_ESTIMATORS, CrossFittedRewardModel, LoggedSlates, LoggedTestEvents,
                                logging_policy_estimates, logging_slate_estimate,
                                summarise_against_truth, unavailable_estimators)
from pipeline.offpolicy.external import external_estimates, load_external_policy
from pipeline.offpolicy.logging_model import LoggingPolicyModel
from pipeline.report import fold_summary, leaderboard, seed_summary
from pipeline.rewards import BINARY_ONLY_METRICS
from pipeline.rundir import RunDirectory
from pipeline.simulation import simulate
from pipeline.split import make_folds
from pipeline.timing import StageTimer
from pipeline.uncertainty import Bootstrap

log = logging.getLogger("pipeline")

LIBRARIES = ("mabwiser", "mab2rec", "jurity", "textwiser", "numpy", "pandas", "scikit-learn", "scipy", "torch",
             "pydantic", "pyarrow")


@dataclass
class RunOutcome:
    path: Path
    metrics: pd.DataFrame
    leaderboard: pd.DataFrame
    timings: dict[str, float]
    off_policy_summary: pd.DataFrame | None = None
    simulation_summary: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    decision: dict | None = None
    off_policy: pd.DataFrame | None = None
    replay: pd.DataFrame | None = None
    off_policy_pooled: pd.DataFrame | None = None  # one row per (policy, k, estimator), pooled intervals
    leaderboard_estimators: tuple[str, ...] = ()  # the off-policy columns of the leaderboard


@dataclass
class _Tables:
    """Rows gathered over seeds, folds and policies, written once at the end."""

    metrics: list = field(default_factory=list)
    recommendations: "RecommendationsFile | None" = None
    test_contexts: list = field(default_factory=list)
    off_policy: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    simulation: list = field(default_factory=list)
    simulation_summary: list = field(default_factory=list)
    folds: list = field(default_factory=list)
    data: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    draws: list = field(default_factory=list)
    replay_biased: bool = False
    logging_model: list = field(default_factory=list)  # fit of estimated propensities, per seed and fold
    replay: list = field(default_factory=list)

    def add_draws(self, draws: dict, seed: int, fold: int, policy: str) -> None:
        """Bootstrap draws by label, kept long (seed, fold, policy, label, resample, value) for the decision."""
        for label, values in draws.items():
            self.draws.append(pd.DataFrame({"seed": seed, "fold": fold, "policy": policy, "label": label,
                                            "resample": np.arange(len(values), dtype=np.int32),
                                            "value": np.asarray(values, dtype=np.float32)}))

    def note(self, text: str) -> None:
        """A note for the terminal and run.json, logged once however many seeds or folds raise it."""
        if text not in self.notes:
            self.notes.append(text)
            log.warning(text)


def run_pipeline(config: PipelineConfig, progress: bool = True) -> RunOutcome:
    """Run every stage and write the run directory; raises ``PipelineError`` on bad config or data."""
    started = time.perf_counter()
    timer = StageTimer()
    policies = config.policy_specs()
    seeds = config.seed_list
    n_folds = config.split.n_folds if config.split_method == "kfold" else 1
    tables = _Tables()
    with RunDirectory(config.run.output_dir, config.run.name or "run") as run_dir:
        bar = tqdm(total=len(seeds) * n_folds * len(policies), desc="policies", unit="policy", disable=not progress)
        tables.recommendations = RecommendationsFile(run_dir.file(layout.parquet(layout.RECOMMENDATIONS)),
                                                     config.evaluation.leaderboard_k)
        executor = make_executor(config.executor, max_tasks=len(policies), scratch=run_dir.work_dir)
        try:
            for seed in seeds:
                _run_seed(config.model_copy(update={"seed": seed}), policies, run_dir, timer, bar, tables, executor)
        finally:
            executor.close()
        bar.close()
        if config.simulation.session_comparison.enabled:
            from pipeline.sessions.stage import run_sessions  # Gymnasium and Stable-Baselines3 only when asked

            with timer.stage("sessions"):
                _write_sessions(run_dir, run_sessions(config, policies))

        with timer.stage("write"):
            metrics, off_policy, summary, simulation = _write_tables(run_dir, tables, config)
            decision, pooled = decision_stage(run_dir, DecisionInputs(tables.draws, metrics, off_policy, tables.data,
                                                                      tables.folds, tables.replay_biased,
                                                                      tables.notes), config)
            estimators = leaderboard_estimators(config, decision, tables.data.get("slate_size") is not None)
            table = leaderboard(metrics, config.evaluation.leaderboard_k, off_policy, decision.get("metric"),
                                estimators)
            run_dir.write_table(layout.LEADERBOARD, table.reset_index())
        timings = {**timer.seconds, "total": time.perf_counter() - started}
        run_dir.write_json(layout.TIMINGS_JSON, timings)
        run_dir.complete({
            "seeds": seeds,
            "split": config.split_method,
            "folds": tables.folds,
            "policies": {spec.name: spec.description for spec in policies},
            "ground_truth": "true_ctr" in set(metrics["metric"]),
            "data": tables.data,
            "leaderboard_k": config.evaluation.leaderboard_k,
            "simulation": config.simulation.model_dump() if config.simulation.enabled else None,
            "sessions": (config.simulation.session_comparison.model_dump()
                         if config.simulation.session_comparison.enabled else None),
            "replay_biased": tables.replay_biased,
            "leaderboard_estimators": list(estimators),
            "decision": {key: decision.get(key) for key in ("metric", "metric_kind", "verdict", "policy")},
            "notes": tables.notes,
        })
    log.info("run written to %s", run_dir.final)
    replay = pd.concat(tables.replay, ignore_index=True) if tables.replay else None
    return RunOutcome(run_dir.final, metrics, table, timings, summary, simulation, tables.notes, decision, off_policy,
                      replay, pooled, estimators)


def _write_sessions(run_dir: RunDirectory, tables: dict[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():  # the stage's names are the layout's
        run_dir.write_table(name, frame)
    if layout.AB_TESTS in tables:
        from pipeline.sessions.ab_test import summarise

        run_dir.write_table(layout.AB_SUMMARY, summarise(tables[layout.AB_TESTS]))


def _write_tables(run_dir: RunDirectory, tables: _Tables, config: PipelineConfig):
    """Write every table gathered over seeds and folds; returns what the terminal report needs."""
    metrics = _with_seed_first(pd.concat(tables.metrics, ignore_index=True))
    metrics.insert(0, "run", run_dir.name)
    run_dir.write_yaml(layout.CONFIG, config.resolved())
    run_dir.write_table(layout.METRICS, metrics)
    if len(config.seed_list) > 1:
        run_dir.write_table(layout.SEED_SUMMARY, seed_summary(metrics))
    run_dir.write_table(layout.FOLD_SUMMARY, fold_summary(metrics))
    tables.recommendations.close(run_dir)
    run_dir.write_table(layout.TEST_CONTEXTS, pd.concat(tables.test_contexts, ignore_index=True), csv=False)
    summary = estimates = None
    if tables.off_policy:
        estimates = _with_seed_first(pd.concat(tables.off_policy, ignore_index=True))
        run_dir.write_table(layout.OFF_POLICY, estimates)
        truth = metrics.rename(columns={"value": "truth"})[["seed", "fold", "policy", "metric", "k", "truth"]]
        if (truth["metric"] == "true_ctr").any():
            candidates = estimates[estimates["policy"] != LOGGING]
            slate = candidates["estimator"].isin(list(SLATE_ESTIMATORS))  # their truth: true_slate_ctr@L
            summary = pd.concat([summarise_against_truth(candidates[~slate], truth[truth["metric"] == "true_ctr"]),
                                 summarise_against_truth(candidates[slate], truth[truth["metric"] == TRUE_SLATE_CTR])],
                                ignore_index=True)
            run_dir.write_table(layout.OFF_POLICY_SUMMARY, summary)
    simulation = None
    if tables.simulation:
        run_dir.write_table(layout.SIMULATION, _with_seed_first(pd.concat(tables.simulation, ignore_index=True)))
        simulation = _with_seed_first(pd.concat(tables.simulation_summary, ignore_index=True))
        run_dir.write_table(layout.SIMULATION_SUMMARY, simulation)
    if tables.replay:
        run_dir.write_table(layout.REPLAY, _with_seed_first(pd.concat(tables.replay, ignore_index=True)))
    if tables.logging_model:
        run_dir.write_table(layout.LOGGING_MODEL, pd.DataFrame(tables.logging_model))
    if tables.diagnostics:
        run_dir.write_table(layout.SAFEGUARDS, pd.DataFrame(tables.diagnostics,
                                                       columns=["seed", "policy", "fold", "counter", "count"]))
    run_dir.write_json(layout.VERSIONS_JSON, library_versions())
    return metrics, estimates, summary, simulation


def _run_seed(config: PipelineConfig, policies, run_dir: RunDirectory, timer: StageTimer, bar, tables: _Tables,
              executor) -> None:
    seed = config.seed
    with timer.stage("data"):
        dataset = load_dataset(config)
    log.info("seed %d: %d events, %d items, contexts per %s", seed, len(dataset.interactions), dataset.n_items,
             dataset.context_level)
    tables.data = dataset.summary()
    if dataset.dropped.get("unknown_users"):
        total = len(dataset.interactions) + sum(dataset.dropped.values())
        tables.note(f"{dataset.dropped['unknown_users']:,} of the {total:,} events of {dataset.source('interactions')} "
                    f"name users missing from {dataset.source('users')} and were dropped (data.files.unknown_users: "
                    "drop); run.json counts them under data.dropped_events")
    if not dataset.reward.binary:
        skipped = [name for name in config.evaluation.metrics if name in BINARY_ONLY_METRICS]
        tables.note(f"{dataset.source('interactions')} holds {dataset.reward.describe()}: CTR is the mean reward "
                    "of the matched events, and every interval of a mean reward stays in that range"
                    + (f"; {', '.join(skipped)} need 0/1 responses and are not computed" if skipped else ""))
        if config.evaluation.replay.enabled:
            raise ConfigError(f"evaluation.replay.enabled: the replay-with-learning curve is a running click rate "
                              f"with Wilson intervals and needs 0/1 responses, but {dataset.source('interactions')} "
                              f"holds {dataset.reward.describe()}; set it to false")
    with timer.stage("split"):
        folds = make_folds(dataset, config.split_method, config.split, seed)
    for note in feature_notes(dataset, config.features):
        tables.note(note)
    with timer.stage("item_features"):
        items = item_featurizer(dataset, config.features, seed)
        vectors = item_vectors(items, dataset.items) if items is not None else None
    if items is not None:
        run_dir.write_pickle(layout.item_featurizer(seed), items)
        run_dir.write_table(layout.item_vectors(seed), vectors, csv=False)
        run_dir.write_table(layout.item_map(seed), item_map(vectors, dataset.items, seed), csv=False)
    if dataset.click_model is not None:
        dataset.click_model.save(run_dir.file(layout.click_model(seed)))
        for name, frame in (("interactions", dataset.interactions), ("users", dataset.users), ("items", dataset.items)):
            run_dir.write_table(layout.data_table(seed, name), frame, csv=False)
    use_truth = config.evaluation.ground_truth and dataset.click_model is not None
    use_off_policy = config.evaluation.off_policy.enabled and dataset.has_propensity
    if config.evaluation.off_policy.enabled and not dataset.has_propensity:
        tables.note(f"off-policy estimates skipped: {dataset.source('interactions')} has no propensity column "
                    "(data.files.columns.propensity); replay metrics are unbiased only if the log was collected "
                    "uniformly at random")
    if dataset.propensity_estimated:
        tables.replay_biased = True  # unknown logging: replay is not trusted for the decision
        tables.note(f"{dataset.source('interactions')} has no logged propensities: they are estimated per fold from "
                    "the training rows (data.files.columns.propensity: estimate), and every off-policy estimate rests "
                    "on that model (fit in logging_model.csv); replay metrics are unbiased only if the log was "
                    "uniform, which cannot be checked, so the decision does not use them")
    elif dataset.has_propensity and not uniform_propensities(dataset.interactions[PROPENSITY].to_numpy()):
        tables.replay_biased = True
        tables.note(f"the propensities of {dataset.source('interactions')} are not uniform: the replay metrics "
                    "(AUC, CTR, Precision, Recall, NDCG, MAP) weight every event alike and are biased towards what "
                    "the logging policy favoured; the decision does not use them (off-policy estimates do)")

    if dataset.slate_size is not None and config.evaluation.top_k < dataset.slate_size:
        raise ConfigError(f"evaluation.top_k is {config.evaluation.top_k} but the impressions of "
                          f"{dataset.source('interactions')} have {dataset.slate_size} slots (its largest position): "
                          "a slate log is evaluated by each policy's top-L list in those slots; set evaluation.top_k "
                          f"to at least {dataset.slate_size}")
    external = {}
    if config.evaluation.external_policies:
        if not use_off_policy:
            raise ConfigError("evaluation.external_policies are evaluated off-policy, which needs the log's "
                              "propensities (data.files.columns.propensity, or 'estimate') and "
                              "evaluation.off_policy.enabled: true")
        if dataset.slate_size is not None and dataset.slates_grouped:
            tables.note("external policies are given by their slot probabilities: on this slate log they get the "
                        "slate estimates that need only those (IIPS, SN-IIPS, and PI under uniform logging); SIPS and "
                        "RIPS need whole-slate and prefix probabilities, which slot marginals do not determine")
        item_column = config.data.files.columns.item_id if config.data.files is not None else ITEM_ID
        external = {name: load_external_policy(name, settings, dataset, item_column)
                    for name, settings in config.evaluation.external_policies.items()}

    for fold in folds:
        with timer.stage("context_features"):
            features = fold_features(dataset, fold, config)
        check_inputs(policies, features, vectors, config.evaluation, dataset, fold.index)
        for note in replay_support_notes(features.test[RESPONSE].to_numpy(), seed, fold.index,
                                         dataset.click_model is not None) if dataset.reward.binary else []:
            tables.note(note)
        tables.folds.append({"seed": seed, "fold": fold.index, "n_train": len(features.train),
                             "n_test": len(features.test), "n_test_contexts": int(features.test["context_id"].nunique())})
        tables.test_contexts.append(pd.DataFrame({"seed": seed, "fold": fold.index,
                                                  CONTEXT_ID: np.sort(features.test[CONTEXT_ID].unique())}))
        if features.context_featurizer is not None:
            run_dir.write_pickle(layout.context_featurizer(seed, fold.index), features.context_featurizer)
        context = FoldContext(seed, fold.index, features, vectors, config.evaluation,
                              Bootstrap(features.test[CONTEXT_ID].to_numpy(), config.evaluation.bootstrap_resamples,
                                        seed, fold.index), dataset.n_items)
        if use_truth:
            with timer.stage("ground_truth"):
                context.truth = GroundTruth(dataset, features, config.evaluation.k_list, config.evaluation.top_k,
                                            config.evaluation.oracle_events, seed)
                oracle = context.truth.oracle(fold.index)
                tables.recommendations.add(oracle, seed)
                logging_draws = {}
                oracle_rows = [oracle_replay_rows(oracle, features, config.evaluation, fold.index, context.bootstrap),
                               context.truth.metric_rows(oracle, ORACLE, fold.index, context.bootstrap),
                               logging_truth_rows(context.truth, fold.index, context.bootstrap, logging_draws)]
                tables.add_draws(decision_draws(logging_draws, config.evaluation), seed, fold.index, LOGGING)
                if config.evaluation.beyond_accuracy:
                    oracle_rows.append(context.beyond_accuracy(oracle, ORACLE))
                tables.metrics += [frame.assign(seed=seed) for frame in oracle_rows]
        if use_off_policy:
            with timer.stage("off_policy"):
                _prepare_off_policy(dataset, features, fold, context, config, external, tables)
        context.bootstrap.release()  # the tasks draw their own copy of the weights from the seed
        if config.evaluation.replay.enabled:
            context.replay_order = _replay_order(dataset, fold.test_rows)
            if dataset.slate_size is not None:  # the top slot's rows, as for the one-item estimators
                positions = dataset.interactions[POSITION].to_numpy()[fold.test_rows]
                context.replay_order = context.replay_order[positions[context.replay_order] == 1]
            if context.logged is None:
                tables.note("replay with learning assumes the log was collected uniformly at random (Li et al. "
                            "2011): the data has no propensities to correct for anything else")
        started = time.perf_counter()
        context = executor.share(context, len(policies))
        del features  # the shared context holds them now
        for outcome in executor.map(context, policies):
            tables.metrics += [frame.assign(seed=seed) for frame in outcome.metrics]
            with timer.stage("write"):
                tables.recommendations.add(outcome.recommendations, seed)
            if outcome.off_policy is not None:
                tables.off_policy.append(outcome.off_policy.assign(seed=seed))
            tables.add_draws(outcome.draws, seed, fold.index, outcome.policy)
            if outcome.replay is not None:
                tables.replay.append(outcome.replay.assign(seed=seed))
            _keep_model_outputs(outcome.recommender, outcome.policy, seed, fold.index, run_dir, tables.diagnostics)
            for stage, seconds in outcome.seconds.items():
                timer.add(stage, seconds)
            bar.set_postfix_str(f"seed {seed} fold {fold.index} {outcome.policy}")
            bar.update()
        timer.add("policies_wall", time.perf_counter() - started)

    if config.simulation.enabled:
        log.info("seed %d: simulating %d online steps", seed, config.simulation.steps)
        with timer.stage("simulation"):
            curves, summary = simulate(config, dataset, vectors, policies, seed)
        tables.simulation.append(curves.assign(seed=seed))
        tables.simulation_summary.append(summary.assign(seed=seed))


def _prepare_off_policy(dataset, features, fold, context: FoldContext, config: PipelineConfig, external: dict,
                        tables: _Tables) -> None:
    """The fold's logged test events for the estimators (into ``context``), the logging policy's own rows, the
    slate log's rows, and the external policies' estimates."""
    seed = context.seed
    settings = config.evaluation.off_policy
    reward_model = CrossFittedRewardModel(settings.reward_model, settings.cross_fit, seed).fit(features)
    if reward_model.fallback_:
        tables.note(f"seed {seed} fold {fold.index}: the logistic reward model of the DR-type estimators "
                    f"could not be fitted ({reward_model.fallback_}); it used item means instead (column "
                    "reward_model of off_policy.csv)")
    context.test_propensity = _test_propensities(dataset, features, fold, seed, tables)
    # On a slate log the one-item and top-k estimators read the top slot only (lower slots' clicks are damped by
    # the position); the slate estimators use every slot.
    top_slot = (dataset.interactions[POSITION].to_numpy()[fold.test_rows] == 1
                if dataset.slate_size is not None else None)
    context.logged = LoggedTestEvents.build(features, context.test_propensity, reward_model, top_slot)
    ks = decision_ks(config.evaluation) if dataset.slate_size is None else [1]  # observed: slot 1
    rows, draws = logging_policy_estimates(context.logged, settings, ks, context.bootstrap, fold.index)
    tables.off_policy.append(rows.assign(seed=seed))
    tables.add_draws(draws, seed, fold.index, LOGGING)
    if dataset.slate_size is not None:
        context.slates = _logged_slates(dataset, features, fold, context, config, tables)
    test = features.test[[EVENT_ID, CONTEXT_ID, ITEM_ID]].reset_index(drop=True)
    for name, probabilities in external.items():
        rows, draws = external_estimates(name, probabilities, test, context.logged, context.slates, top_slot,
                                         decision_ks(config.evaluation), settings, dataset.n_items, context.bootstrap,
                                         fold.index, str(config.evaluation.external_policies[name].file),
                                         dataset.first_row_event)
        tables.off_policy.append(rows.assign(seed=seed))
        tables.add_draws(draws, seed, fold.index, name)


def _logged_slates(dataset, features, fold, context: FoldContext, config: PipelineConfig, tables: _Tables
                   ) -> LoggedSlates | None:
    """The fold's test rows as the slate estimators need them, with the logging policy's own slate row; None
    when the propensities are estimated (the fitted logging model knows items, not slots)."""
    if dataset.propensity_estimated:
        tables.note("slate estimates skipped: they need the logged item-position propensities, and these are "
                    "estimated (data.files.columns.propensity: estimate)")
        return None
    logged = dataset.interactions.iloc[fold.test_rows]
    rows = pd.DataFrame({"slot": logged[POSITION].to_numpy() - 1, "propensity": context.test_propensity})
    for column, name in ((SLATE_ID, "slate"), (SLATE_PROPENSITY, SLATE_PROPENSITY),
                         (CASCADE_PROPENSITY, CASCADE_PROPENSITY)):
        if column in logged.columns:
            rows[name] = logged[column].to_numpy()
    slates = LoggedSlates.build(features.test[[CONTEXT_ID, ITEM_ID, RESPONSE]].reset_index(drop=True), rows,
                                dataset.slate_size, context.logged.logged_items)
    missing = unavailable_estimators(slates)
    chosen = config.evaluation.decision.slate_estimator
    if chosen in missing and config.evaluation.decision.metric in ("auto", "off_policy") \
            and not (config.evaluation.ground_truth and dataset.click_model is not None):
        raise ConfigError(f"evaluation.decision.slate_estimator is {chosen}, which {missing[chosen]} in "
                          f"{dataset.source('interactions')}; choose one of "
                          f"{', '.join(n for n in SLATE_ESTIMATORS if n not in missing)}")
    for reason in dict.fromkeys(missing.values()):
        names = [name for name, why in missing.items() if why == reason]
        tables.note(f"slate estimator(s) {', '.join(names)} skipped: they need {reason.removeprefix('needs ')}")
    rows, draws = logging_slate_estimate(slates, config.evaluation.off_policy, context.bootstrap, fold.index)
    tables.off_policy.append(rows.assign(seed=context.seed))
    tables.add_draws(draws, context.seed, fold.index, LOGGING)
    return slates


def _test_propensities(dataset, features, fold, seed: int, tables: _Tables) -> np.ndarray:
    """The logged propensities of the fold's test rows, or, for ``propensity: estimate``, the fitted ones."""
    if not dataset.propensity_estimated:
        return dataset.interactions[PROPENSITY].to_numpy()[fold.test_rows]
    catalog = (dataset.items if dataset.items is not None else dataset.interactions)[ITEM_ID].unique().tolist()
    model = LoggingPolicyModel(seed).fit(features, catalog)
    tables.logging_model.append({"seed": seed, "fold": fold.index, **model.fit_report(features.test)})
    return model.propensity(features.test[CONTEXT_ID].to_numpy(), features.test[ITEM_ID].to_numpy())


def _replay_order(dataset, rows: np.ndarray) -> np.ndarray:
    """Positions of the fold's test rows in time order (file order without timestamps)."""
    if not dataset.has_timestamp:
        return np.arange(len(rows))
    return np.argsort(dataset.interactions[TIMESTAMP].to_numpy()[rows], kind="stable")


def uniform_propensities(propensity: np.ndarray) -> bool:
    """Whether every event was logged with the same propensity (up to rounding in the user's file)."""
    return len(propensity) == 0 or float(np.ptp(propensity)) <= 1e-6 * float(np.max(propensity))


def replay_support_notes(test_responses: np.ndarray, seed: int, fold: int, has_truth: bool) -> list[str]:
    """Why replay metrics of a fold will be n/a: a test split without a click, or with nothing but clicks."""
    clicks, n = int(test_responses.sum()), len(test_responses)
    elsewhere = ("the ground-truth columns (true_*) still rank the policies" if has_truth else
                 "use more data, a larger split.test_fraction, or split.method: kfold")
    if clicks == 0:
        return [f"seed {seed} fold {fold}: the test split holds no click among its {n} events, so every replay metric "
                f"(AUC, CTR, Precision, Recall, NDCG, MAP) is undefined there (n/a); {elsewhere}"]
    if clicks == n:
        return [f"seed {seed} fold {fold}: every one of the {n} test events is a click, so AUC (which compares "
                f"clicked with unclicked items) is undefined there (n/a); {elsewhere}"]
    return []


def item_map(vectors: pd.DataFrame, items: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A 2-D map of the item vectors (PCA of the standardised TextWiser + attribute vectors), for the dashboard."""
    values = vectors.drop(columns=ITEM_ID).to_numpy(dtype=float)
    scale = values.std(axis=0)
    values = (values - values.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    n_components = min(2, *values.shape)
    coordinates = PCA(n_components=n_components, random_state=seed).fit_transform(values)
    frame = pd.DataFrame({ITEM_ID: vectors[ITEM_ID].to_numpy(), "x": coordinates[:, 0],
                          "y": coordinates[:, 1] if n_components > 1 else 0.0})
    return frame.merge(items, on=ITEM_ID, how="left")


class RecommendationsFile:
    """``recommendations.parquet``, written one policy's lists at a time, plus the two small tables derived from it.

    Each (seed, fold, policy) block is sorted by context and rank and written in row groups of 50k rows, so a
    reader filtering on one context reads one row group per block; only one policy's lists are ever in
    memory (all of them at once were the peak memory of a 1M-event run).
    """

    def __init__(self, path: Path, exposure_k: int):
        self.path, self.exposure_k = path, exposure_k
        self._writer = None
        self._exposure: list[pd.DataFrame] = []

    def add(self, lists: pd.DataFrame, seed: int) -> None:
        """One policy's ranked lists on one fold (``fold, policy, rank, context_id, item_id, score``)."""
        frame = lists.assign(seed=seed, rank=lists["rank"].astype(np.int16), fold=lists["fold"].astype(np.int16))
        frame = frame[["seed", "fold", "policy", "rank", CONTEXT_ID, ITEM_ID, "score"]]
        context_order = pd.factorize(frame[CONTEXT_ID], sort=True)[0]
        frame = frame.take(np.lexsort((frame["rank"].to_numpy(), context_order))).reset_index(drop=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table.cast(self._writer.schema), row_group_size=50_000)
        self._exposure.append(item_exposure(frame, self.exposure_k))

    def close(self, run_dir: RunDirectory) -> None:
        if self._writer is not None:
            self._writer.close()
        run_dir.write_table(layout.ITEM_EXPOSURE, pd.concat(self._exposure, ignore_index=True), csv=False)


def item_exposure(recommendations: pd.DataFrame, k: int) -> pd.DataFrame:
    """How often each policy shows each item in its top-k lists (``seed, policy, k, item_id, shown``)."""
    top = recommendations[recommendations["rank"] < k]
    counts = top.groupby(["seed", "policy", ITEM_ID]).size().rename("shown").reset_index()
    return counts.assign(k=k)[["seed", "policy", "k", ITEM_ID, "shown"]]


def _with_seed_first(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["seed"] + [c for c in frame.columns if c != "seed"]].reset_index(drop=True)


def _keep_model_outputs(recommender, policy: str, seed: int, fold: int, run_dir: RunDirectory,
                        diagnostics: list) -> None:
    """Save the trained recommender (the dashboard scores hand-set contexts with it, without retraining), export
    policies that can export themselves (NeuralLinear) and collect their safeguard counters."""
    folder = layout.policy_folder(seed, fold, policy)
    run_dir.write_pickle(layout.recommender(seed, fold, policy), recommender)
    if hasattr(recommender, "export"):
        recommender.export(run_dir.file(folder))
    if hasattr(recommender, "diagnostics"):
        diagnostics += [(seed, policy, fold, counter, count) for counter, count in recommender.diagnostics().items()]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
