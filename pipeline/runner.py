"""One pipeline run: data -> split -> features -> policies -> evaluation -> run directory."""

from __future__ import annotations

import logging
import platform
import re
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from pipeline.config import PipelineConfig
from pipeline.data import load_dataset
from pipeline.evaluation import GroundTruth, check_inputs, oracle_replay_rows, run_policy
from pipeline.features import build_fold_features, item_featurizer, item_vectors
from pipeline.report import leaderboard
from pipeline.rundir import RunDirectory
from pipeline.split import make_folds
from pipeline.timing import StageTimer

log = logging.getLogger("pipeline")

LIBRARIES = ("mabwiser", "mab2rec", "jurity", "textwiser", "numpy", "pandas", "scikit-learn", "scipy", "torch",
             "pydantic", "pyarrow")


@dataclass
class RunOutcome:
    path: Path
    metrics: pd.DataFrame
    leaderboard: pd.DataFrame
    timings: dict[str, float]


def run_pipeline(config: PipelineConfig, progress: bool = True) -> RunOutcome:
    """Run every stage and write the run directory; raises ``PipelineError`` on bad config or data."""
    started = time.perf_counter()
    timer = StageTimer()
    seed = config.seed
    with timer.stage("data"):
        dataset = load_dataset(config)
    log.info("data: %d events, %d items, contexts per %s", len(dataset.interactions), dataset.n_items,
             dataset.context_level)
    with timer.stage("split"):
        folds = make_folds(dataset, config.split_method, config.split, seed)
    with timer.stage("item_features"):
        items = item_featurizer(dataset, config.features, seed)
        vectors = item_vectors(items, dataset.items) if items is not None else None
    policies = config.policy_specs()
    use_truth = config.evaluation.ground_truth and dataset.click_model is not None

    metric_frames, recommendation_frames, fold_sizes, diagnostics = [], [], [], []
    with RunDirectory(config.run.output_dir, config.run.name or "run") as run_dir:
        bar = tqdm(total=len(folds) * len(policies), desc="policies", unit="policy", disable=not progress)
        for fold in folds:
            with timer.stage("context_features"):
                features = build_fold_features(dataset, fold, config.features)
            check_inputs(policies, features, vectors, config.evaluation, dataset)
            fold_sizes.append({"fold": fold.index, "n_train": len(features.train), "n_test": len(features.test),
                               "n_test_contexts": int(features.test["context_id"].nunique())})
            if features.context_featurizer is not None:
                run_dir.write_pickle(f"artifacts/fold_{fold.index}/context_featurizer.joblib",
                                     features.context_featurizer)
            truth = None
            if use_truth:
                with timer.stage("ground_truth"):
                    truth = GroundTruth(dataset, features, config.evaluation.k_list)
                    oracle = truth.oracle(config.evaluation.top_k, fold.index)
                    recommendation_frames.append(oracle)
                    metric_frames += [oracle_replay_rows(oracle, features, config.evaluation, fold.index),
                                      truth.metric_rows(oracle, "Oracle", fold.index)]
            for spec in policies:
                bar.set_postfix_str(f"fold {fold.index} {spec.name}")
                with timer.stage(f"policy:{spec.name}"):
                    result = run_policy(spec, features, vectors, fold.index, config.evaluation, seed)
                metric_frames.append(result.metrics)
                recommendation_frames.append(result.recommendations)
                _keep_model_outputs(result.recommender, spec.name, fold.index, run_dir, diagnostics)
                if truth is not None:
                    with timer.stage("ground_truth"):
                        metric_frames.append(truth.metric_rows(result.recommendations, spec.name, fold.index))
                bar.update()
        bar.close()

        with timer.stage("write"):
            metrics = pd.concat(metric_frames, ignore_index=True)
            metrics.insert(0, "run", run_dir.name)
            table = leaderboard(metrics, config.evaluation.leaderboard_k)
            run_dir.write_yaml("config.yaml", config.resolved())
            run_dir.write_table("metrics", metrics)
            run_dir.write_table("leaderboard", table.reset_index())
            run_dir.write_table("recommendations", pd.concat(recommendation_frames, ignore_index=True), csv=False)
            if items is not None:
                run_dir.write_pickle("artifacts/item_featurizer.joblib", items)
                run_dir.write_table("artifacts/item_vectors", vectors, csv=False)
            if dataset.click_model is not None:
                dataset.click_model.save(run_dir.file("artifacts/click_model.npz"))
                for name, frame in (("interactions", dataset.interactions), ("users", dataset.users),
                                    ("items", dataset.items)):
                    run_dir.write_table(f"data/{name}", frame, csv=False)
            if diagnostics:
                run_dir.write_table("safeguards", pd.DataFrame(diagnostics, columns=["policy", "fold", "counter", "count"]))
            run_dir.write_json("versions.json", library_versions())
        timings = {**timer.seconds, "total": time.perf_counter() - started}
        run_dir.write_json("timings.json", timings)
        run_dir.complete({
            "seed": seed,
            "split": config.split_method,
            "folds": fold_sizes,
            "policies": {spec.name: spec.description for spec in policies},
            "ground_truth": use_truth,
            "data": dataset.summary(),
            "leaderboard_k": config.evaluation.leaderboard_k,
        })
    log.info("run written to %s", run_dir.final)
    return RunOutcome(run_dir.final, metrics, table, timings)


def _keep_model_outputs(recommender, policy: str, fold: int, run_dir: RunDirectory, diagnostics: list) -> None:
    """Export policies that can export themselves (NeuralLinear) and collect their safeguard counters."""
    if hasattr(recommender, "export"):
        recommender.export(run_dir.file(f"artifacts/fold_{fold}/{safe_name(policy)}"))
    if hasattr(recommender, "diagnostics"):
        diagnostics += [(policy, fold, counter, count) for counter, count in recommender.diagnostics().items()]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
