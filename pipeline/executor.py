"""Where the grid runs: one task per (seed, fold, policy), on local processes or on a Ray cluster.

A task (``evaluate_policy``) trains one policy on one fold, scores it and measures it (replay metrics,
ground truth, beyond-accuracy, off-policy); everything it needs is in a ``FoldContext`` built once per fold by
the runner, and everything it returns is plain data the runner writes.  The same function runs under
every executor, with the BLAS/PyTorch thread count ``executor.threads_per_task`` (by default the cores
shared among the workers), so with that set results do not depend on where a task ran: a test checks local
processes and Ray against the in-process run.

- ``local`` with one worker runs tasks in this process; with more, in a pool of spawned processes (spawn,
  not fork: PyTorch's OpenMP threads do not survive a fork), one pool per fold, so no worker outlives the
  fold context it loaded.  ``workers: null`` uses one per core, but runs folds under 100k events in this
  process (starting a pool costs about 3 s).  The fold context goes to the workers through a file in the
  run's scratch folder that the runner and each worker memory-map, so its arrays are in memory once, not
  once per process.  Workers die with the runner, even a runner killed with ``kill -9`` (a parent-death
  signal, and a watchdog thread where that is not available), and an interrupted runner (Ctrl-C, SIGTERM)
  terminates them instead of waiting for their tasks.
- ``ray`` submits the tasks to the cluster ``RAY_ADDRESS`` names, or to a local Ray instance it starts;
  the fold context is put in Ray's object store once per fold.  Ray is an optional install
  (``requirements-ray.txt``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

import joblib
import numpy as np
import pandas as pd

from pipeline.beyond_accuracy import beyond_accuracy_rows
from pipeline.config import EvaluationConfig, ExecutorConfig
from pipeline.data.dataset import CONTEXT_ID, ITEM_ID, RESPONSE
from pipeline.errors import ConfigError
from pipeline.evaluation import TRUE_SLATE_CTR, GroundTruth, run_policy
from pipeline.features import FoldFeatures
from pipeline.offpolicy import (SLATE_ESTIMATORS, LoggedSlates, LoggedTestEvents, OBSERVED_SLATE, policy_estimates,
                                slate_estimates, slate_target_terms, target_terms)
from pipeline.policies import PolicySpec
from pipeline.replay import REPLAY_COLUMNS, replay_with_learning
from pipeline.scoring import ScoringInput
from pipeline.timing import StageTimer
from pipeline.uncertainty import Bootstrap


AUTO_PARALLEL_EVENTS = 100_000  # with workers: null, smaller folds run in this process


@dataclass
class FoldContext:
    """Everything a policy task needs about one (seed, fold)."""

    seed: int
    fold: int
    features: FoldFeatures
    item_vectors: pd.DataFrame | None
    evaluation: EvaluationConfig
    bootstrap: Bootstrap
    n_items: int
    truth: GroundTruth | None = None
    logged: LoggedTestEvents | None = None  # the test events as the off-policy estimators need them, or None
    slates: LoggedSlates | None = None  # the same rows as the slate estimators need them (slate logs), or None
    test_propensity: np.ndarray | None = None  # every test row's logging propensity (replay), or None
    replay_order: object = None  # test rows in time order (replay with learning), or None

    def beyond_accuracy(self, recommendations: pd.DataFrame, policy: str) -> pd.DataFrame:
        """Diversity, coverage and novelty rows of one policy's lists on this fold."""
        evaluation = self.evaluation
        return beyond_accuracy_rows(recommendations, self.features.train[ITEM_ID], self.n_items, self.item_vectors,
                                    evaluation.k_list, evaluation.diversity_sample, self.seed, policy, self.fold)


@dataclass
class PolicyOutcome:
    """What one task returns: metric rows, ranked lists, off-policy rows, the trained recommender, timings."""

    policy: str
    metrics: list[pd.DataFrame]
    recommendations: pd.DataFrame
    recommender: object
    off_policy: pd.DataFrame | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # bootstrap draws by label, e.g. "DR@5"
    replay: pd.DataFrame | None = None  # replay-with-learning curve


def evaluate_policy(context: FoldContext, spec: PolicySpec, threads: int) -> PolicyOutcome:
    """Train, score and measure one policy on one fold (the unit of work of every executor)."""
    if getattr(spec.learning_policy, "uses_torch", False):
        import torch  # noqa: F401 (imported before thread_limit, so its thread count is set too)
    timer, evaluation, off_policy = StageTimer(), context.evaluation, None
    with thread_limit(threads):
        with timer.stage(f"policy:{spec.name}"):
            result = run_policy(spec, context.features, context.item_vectors, context.fold, evaluation,
                                context.seed, context.bootstrap)
        metrics = [result.metrics]
        if evaluation.beyond_accuracy:
            with timer.stage("beyond_accuracy"):
                metrics.append(context.beyond_accuracy(result.recommendations, spec.name))
        draws = dict(result.draws)
        if context.truth is not None:
            with timer.stage("ground_truth"):
                metrics.append(context.truth.metric_rows(result.recommendations, spec.name, context.fold,
                                                         context.bootstrap, draws))
        if context.logged is not None:
            with timer.stage("off_policy"):
                off_policy, estimate_draws = off_policy_for(context, spec, result)
                draws.update(estimate_draws)
        curve = None
        if context.replay_order is not None:
            with timer.stage("replay"):
                curve = replay_for(context, spec, result.recommender)
    return PolicyOutcome(spec.name, metrics, result.recommendations, result.recommender, off_policy,
                         timer.seconds, decision_draws(draws, context.evaluation), curve)


def replay_for(context: FoldContext, spec: PolicySpec, recommender) -> pd.DataFrame:
    """The policy's replay-with-learning curve on the fold's test log (pipeline.replay)."""
    test = context.features.test.iloc[context.replay_order]
    contextual = recommender.mab.is_contextual
    contexts = context.features.context_matrix(test[CONTEXT_ID].to_numpy()) if contextual else np.zeros((len(test), 0))
    # Without logged propensities the log is taken as uniform (the runner says so in a note).
    propensity = context.test_propensity if context.test_propensity is not None \
        else np.ones(len(context.features.test))
    curve = replay_with_learning(recommender, contexts, test[ITEM_ID].to_numpy(), test[RESPONSE].to_numpy(),
                                 propensity[context.replay_order],
                                 context.evaluation.replay.batch_size, context.seed, contextual)
    return curve.assign(policy=spec.name, fold=context.fold)[REPLAY_COLUMNS]


def off_policy_for(context: FoldContext, spec: PolicySpec, result) -> tuple[pd.DataFrame, dict]:
    """Every estimator of one policy's first item and top-k list (k = leaderboard_k) on the fold's log."""
    evaluation = context.evaluation
    inputs = ScoringInput.of(context.features, contextual=result.recommender.mab.is_contextual) \
        if result.scorer is not None else None
    targets = target_terms(result.recommendations, result.scorer, inputs, context.logged.test,
                           decision_ks(evaluation), context.logged.reward_model, context.logged.logged_items,
                           evaluation.off_policy.action_samples, context.seed,
                           stochastic_without_scorer=spec.is_sampling)
    rows, draws = policy_estimates(targets, context.logged, evaluation.off_policy, context.n_items, context.bootstrap,
                                   spec.name, context.fold)
    if context.slates is None:
        return rows, draws
    terms = slate_target_terms(result.recommendations, result.scorer, inputs, context.slates,
                               evaluation.off_policy.action_samples, context.seed, spec.is_sampling)
    slate_rows, slate_draws = slate_estimates(terms, context.slates, evaluation.off_policy, context.bootstrap,
                                              spec.name, context.fold)
    return pd.concat([rows, slate_rows], ignore_index=True), {**draws, **slate_draws}


def decision_ks(evaluation: EvaluationConfig) -> list[int]:
    """The list lengths the decision and the off-policy estimates look at: the first item and leaderboard_k."""
    return sorted({1, evaluation.leaderboard_k})


def decision_draws(draws: dict[str, np.ndarray], evaluation: EvaluationConfig) -> dict[str, np.ndarray]:
    """The draws the decision can use (at k = 1 and leaderboard_k, and the slate estimates), as float32 to keep
    the run small."""
    ks = {str(k) for k in decision_ks(evaluation)}
    slate = {*SLATE_ESTIMATORS, OBSERVED_SLATE, TRUE_SLATE_CTR}
    return {label: values.astype(np.float32) for label, values in draws.items()
            if label.rpartition("@")[2] in ks or label.rpartition("@")[0] in slate}


@contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """BLAS, OpenMP and PyTorch use ``threads`` threads inside the block (restored after)."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # set PyTorch's own count only where a NeuralLinear task imported it
    previous = torch.get_num_threads() if torch else None
    try:
        with threadpool_limits(limits=threads):
            if torch:
                torch.set_num_threads(threads)
            yield
    finally:
        if torch and previous:
            sys.modules["torch"].set_num_threads(previous)


# ------------------------------------------------------------------------------------------ executors
class LocalExecutor:
    """In-process for one worker; otherwise a pool of spawned processes per fold."""

    def __init__(self, config: ExecutorConfig, max_tasks: int, scratch: Path):
        cores = os.cpu_count() or 1
        self.scratch = scratch
        self.fixed_workers = config.workers
        self.workers = max(1, min(config.workers or cores // (config.threads_per_task or 1), max_tasks))
        self.threads = config.threads_per_task or max(1, cores // self.workers)
        self.threads_in_process = config.threads_per_task or cores
        self._pool = None
        self._paths: dict[int, str] = {}  # id of a shared context -> its file

    def _parallel(self, context: FoldContext, n_tasks: int) -> bool:
        events = len(context.features.train) + len(context.features.test)
        small = self.fixed_workers is None and events < AUTO_PARALLEL_EVENTS  # a pool costs seconds to start
        return self.workers > 1 and n_tasks > 1 and not small

    def share(self, context: FoldContext, n_tasks: int) -> FoldContext:
        """The context the runner should keep: for a parallel fold, written once to a file and read back
        memory-mapped, so the runner and every worker share one read-only copy of its arrays."""
        if not self._parallel(context, n_tasks):
            return context
        path = Path(self.scratch) / f"seed{context.seed}-fold{context.fold}.joblib"
        joblib.dump(context, path)
        shared = joblib.load(path, mmap_mode="r")
        self._paths[id(shared)] = str(path)
        return shared

    def map(self, context: FoldContext, specs: list[PolicySpec]) -> Iterator[PolicyOutcome]:
        """Outcomes in ``specs`` order."""
        if id(context) not in self._paths:
            for spec in specs:
                yield evaluate_policy(context, spec, self.threads_in_process)
            return
        path = self._paths.pop(id(context))
        self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=die_with_parent,
                                         initargs=(os.getpid(),))
        futures = {spec.name: self._pool.submit(_evaluate_from_file, path, spec, self.threads)
                   for spec in heaviest_first(specs)}
        futures = [futures[spec.name] for spec in specs]
        finished = False
        try:
            for future in futures:
                yield future.result()
            finished = True
        finally:
            # The workers hold this fold's context until they exit: a new pool per fold keeps memory bounded
            # (starting one costs about 3 s, small next to a fold of 100k+ events).
            self._stop_pool(wait=finished)
            Path(path).unlink(missing_ok=True)

    def _stop_pool(self, wait: bool) -> None:
        """Shut the pool down; unless ``wait``, terminate the workers instead of letting running tasks finish
        (an interrupted or failed run must not wait minutes for work it will throw away)."""
        if self._pool is None:
            return
        workers = list((self._pool._processes or {}).values())  # no public handle on the workers before 3.14
        if not wait:
            for worker in workers:
                worker.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def close(self) -> None:
        self._stop_pool(wait=False)


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal the kernel sends this process when its parent dies


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the runner that started it ends, however it ends.

    On Linux the kernel sends SIGKILL at the parent's death (``prctl(PR_SET_PDEATHSIG)``); a daemon thread
    that polls the parent id covers other systems and a parent that died before the call.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the watchdog below does it

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


_LOADED: dict[str, FoldContext] = {}  # per worker process: the fold context it last loaded


def _evaluate_from_file(path: str, spec: PolicySpec, threads: int) -> PolicyOutcome:
    if path not in _LOADED:
        _LOADED.clear()
        _LOADED[path] = joblib.load(path, mmap_mode="r")  # arrays shared through the page cache, read-only
    return evaluate_policy(_LOADED[path], spec, threads)


class RayExecutor:
    """Ray tasks on the cluster ``RAY_ADDRESS`` names (a local Ray instance when unset)."""

    def __init__(self, config: ExecutorConfig, max_tasks: int):
        try:
            import ray
        except ImportError:
            raise ConfigError("executor: ray needs Ray, an optional install: pip install -r requirements-ray.txt "
                              "(or use executor: local)") from None
        self.ray, self.threads = ray, config.threads_per_task or 1
        self._started_here = not ray.is_initialized()
        if self._started_here:
            address = os.environ.get("RAY_ADDRESS")
            # A remote cluster gets this package shipped with the job; a local instance imports it from here.
            runtime_env = {"py_modules": [str(Path(__file__).parent)]} if address else None
            ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
                     num_cpus=None if address else os.cpu_count())
        self._task = ray.remote(num_cpus=self.threads)(evaluate_policy)

    def share(self, context: FoldContext, n_tasks: int) -> FoldContext:
        return context

    def map(self, context: FoldContext, specs: list[PolicySpec]) -> Iterator[PolicyOutcome]:
        reference = self.ray.put(context)
        futures = {spec.name: self._task.remote(reference, spec, self.threads) for spec in heaviest_first(specs)}
        futures = [futures[spec.name] for spec in specs]
        for future in futures:
            yield self.ray.get(future)

    def close(self) -> None:
        if self._started_here:
            self.ray.shutdown()


def heaviest_first(specs: list[PolicySpec]) -> list[PolicySpec]:
    """Submission order: the slowest policies first (ours, then neighborhood policies such as ClustersTS,
    whose KMeans dominates, then the linear ones), so no worker is left running one long task at the end."""
    def cost(spec: PolicySpec) -> int:
        if getattr(spec.learning_policy, "uses_torch", False):
            return 0
        if spec.neighborhood_policy is not None:
            return 1
        return 2 if spec.is_contextual else 3
    return sorted(specs, key=cost)


def make_executor(config: ExecutorConfig, max_tasks: int, scratch: Path):
    """``scratch``: a folder for the files local workers share (the run's work folder)."""
    return RayExecutor(config, max_tasks) if config.kind == "ray" else LocalExecutor(config, max_tasks, scratch)
