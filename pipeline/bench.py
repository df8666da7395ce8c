"""``python -m pipeline bench``: our pipeline against plain Mab2Rec ``benchmark`` on the same synthetic data.

One process generates a synthetic shop of ``--events`` x ``--items`` (the default config's generator and
split), runs our whole pipeline on it (six MABWiser policies, every metric with intervals, ground truth,
off-policy, beyond-accuracy, run directory), then calls Mab2Rec's ``benchmark`` on the same train/test split
with the same context features, policies, seed and Jurity metrics, and reports:

- wall time of each of our stages and of the whole run, and of Mab2Rec's ``benchmark`` (which does only
  train + score + metrics: data and features are handed to it), and the speed-up of the whole run;
- peak memory of each side, each run in a fresh process: the sum of the proportional set size (PSS) of
  that process and its children, sampled every 0.2 s, so shared library pages are not counted twice;
- deterministic policies (LinGreedy with epsilon 0, LinUCB): every replay metric equal to 1e-9 and every
  list identical; sampling policies (Random, Popularity, LinTS, ClustersTS): a chi-square test per rank
  that both sides show items with the same distribution over the same test contexts (``compare_lists``);
  the metrics side by side are in ``bench_metrics.csv`` in our run directory.

Plain Mab2Rec does not finish at 1M x 1,000 on a 2-core machine, so ``--compare-events`` runs the comparison
at that size and our pipeline alone at ``--events``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from scipy.stats import chi2_contingency

from pipeline import layout
from pipeline.config import METRIC_NAMES, PipelineConfig, load_config

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
POLICIES = {  # the six MABWiser policies of the default config, LinGreedy greedy so that two are deterministic
    "Random": {"learning_policy": "Random"},
    "Popularity": {"learning_policy": "Popularity"},
    "LinGreedy": {"learning_policy": "LinGreedy", "params": {"epsilon": 0.0, "l2_lambda": 1.0}},
    "LinUCB": {"learning_policy": "LinUCB", "params": {"alpha": 1.0, "l2_lambda": 1.0}},
    "LinTS": {"learning_policy": "LinTS", "params": {"alpha": 1.0, "l2_lambda": 1.0}},
    "ClustersTS": {"learning_policy": "ThompsonSampling", "neighborhood_policy": "Clusters",
                   "neighborhood_params": {"n_clusters": 10}},
}
DETERMINISTIC = ("LinGreedy", "LinUCB")


class PeakMemory:
    """Peak of the summed PSS of this process's children (recursively) while the block runs."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in me.children(recursive=True):
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:  # a worker that just exited
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    @contextmanager
    def watch(self):
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def bench_config(base: Path, events: int, items: int, output_dir: Path, overrides: list[str]) -> PipelineConfig:
    sizes = [f"data.synthetic.n_events={events}", f"data.synthetic.n_items={items}",
             f"data.synthetic.n_users={max(2000, events // 50)}", f"run.output_dir={output_dir}",
             f"run.name=bench-{events}x{items}", "simulation.enabled=false", f"policies={json.dumps(POLICIES)}"]
    return load_config(base, sizes + overrides)


def in_fresh_process(function, *args):
    """Run ``function(*args)`` in a new (spawned) process and measure that process tree's peak memory, so each
    side starts from a clean interpreter and nothing one side left behind counts against the other."""
    from pipeline.executor import die_with_parent  # a killed bench leaves no side running

    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool, PeakMemory().watch() as memory:
        result = pool.submit(function, *args).result()
    return {**result, "peak_gb": memory.peak / 1e9}


def run_ours(config: PipelineConfig) -> dict:
    from pipeline.cli import _quiet_library_warnings
    from pipeline.runner import run_pipeline

    _quiet_library_warnings()
    started = time.perf_counter()
    outcome = run_pipeline(config, progress=False)
    return {"path": outcome.path, "wall": time.perf_counter() - started, "timings": outcome.timings,
            "metrics": outcome.metrics}


def run_mab2rec(config: PipelineConfig, our_run: Path) -> dict:
    """Plain Mab2Rec ``benchmark`` on the run's split and context features (built before the clock starts),
    then its lists against ours (``compare_lists``)."""
    from mab2rec.pipeline import benchmark

    from pipeline.cli import _quiet_library_warnings
    from pipeline.data import load_dataset
    from pipeline.evaluation import replay_metrics
    from pipeline.features import fold_features
    from pipeline.split import make_folds

    _quiet_library_warnings()
    dataset = load_dataset(config)
    fold = make_folds(dataset, config.split_method, config.split, config.seed)[0]
    features = fold_features(dataset, fold, config)
    columns = ["context_id", "item_id", "response"]
    recommenders = {spec.name: spec.build(top_k=config.evaluation.top_k, seed=config.seed)
                    for spec in config.policy_specs()}
    metrics = replay_metrics(config.evaluation)
    started = time.perf_counter()
    lists, scores = benchmark(recommenders, [m.jurity for m in metrics], features.train[columns],
                              features.test[columns], user_features=features.contexts, user_id_col="context_id",
                              batch_size=config.evaluation.batch_size)
    wall = time.perf_counter() - started
    rows = [(policy, m.name, m.k, float(values[m.label])) for policy, values in scores.items() for m in metrics]
    ours = pd.read_parquet(Path(our_run) / layout.parquet(layout.RECOMMENDATIONS))
    return {"wall": wall, "metrics": pd.DataFrame(rows, columns=["policy", "metric", "k", "mab2rec"]),
            "lists": compare_lists(ours, lists)}


def compare_lists(ours: pd.DataFrame, theirs: dict[str, pd.DataFrame], ranks: int = 3) -> pd.DataFrame:
    """Per policy: the share of contexts whose top-k list equals Mab2Rec's, and for every rank < ``ranks``
    the p-value of a chi-square test that both sides draw the item shown there from the same distribution.

    Both sides rank the same test contexts with the same trained model, so for a sampling policy the counts
    of each item at a rank are two independent draws of one distribution (the test is conservative: contexts
    differ, so the counts vary less than multinomial ones).  Items expected fewer than 5 times are pooled.
    """
    rows = []
    for policy, lists in theirs.items():
        lists = lists.assign(rank=lists.groupby("context_id", sort=False).cumcount())
        mine = ours[ours["policy"] == policy]
        joined = lists.merge(mine[["context_id", "rank", "item_id"]], on=["context_id", "rank"],
                             suffixes=("_mab2rec", "_ours"))
        same = (joined["item_id_mab2rec"].astype(str) == joined["item_id_ours"].astype(str))
        identical = float(same.groupby(joined["context_id"]).all().mean())
        p_values = []
        for rank in range(ranks):
            at = joined[joined["rank"] == rank]
            table = pd.crosstab(at["item_id_mab2rec"].astype(str), "n").rename(columns={"n": "mab2rec"}).join(
                pd.crosstab(at["item_id_ours"].astype(str), "n").rename(columns={"n": "ours"}), how="outer").fillna(0)
            rare = table.sum(axis=1) < 10
            table = pd.concat([table[~rare], table[rare].sum().to_frame("other").T])
            table = table[table.sum(axis=1) > 0]
            p_values.append(float(chi2_contingency(table.to_numpy().T)[1]) if len(table) > 1 else 1.0)
        rows.append((policy, len(joined) // max(1, joined["rank"].nunique()), identical, min(p_values)))
    return pd.DataFrame(rows, columns=["policy", "contexts", "identical_lists", "min_p_value"])


def compare_metrics(ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Our replay metrics (with their 95% intervals) next to Mab2Rec's, and the absolute difference."""
    mine = ours[ours["metric"].isin(METRIC_NAMES) & (ours["policy"] != "Oracle")]
    joined = mine[["policy", "metric", "k", "value", "low", "high", "support"]].merge(theirs, on=["policy", "metric", "k"])
    joined["abs_diff"] = (joined["value"] - joined["mab2rec"]).abs()
    joined["deterministic"] = joined["policy"].isin(DETERMINISTIC)
    return joined


def stage_table(ours: dict, theirs: dict | None) -> pd.DataFrame:
    timings = ours["timings"]
    policies = [name for name in timings if name.startswith("policy:")]
    rows = [(stage, timings.get(stage, 0.0)) for stage in
            ("data", "item_features", "context_features", "ground_truth", "off_policy")]
    rows += [("policies (train + score + replay metrics, wall)", timings.get("policies_wall", 0.0))]
    rows += [(f"- task {name.removeprefix('policy:')}", timings[name]) for name in policies]
    rows += [("- tasks' beyond_accuracy", timings.get("beyond_accuracy", 0.0)), ("write", timings.get("write", 0.0)),
             ("total", ours["wall"])]
    table = pd.DataFrame(rows, columns=["stage", "ours_s"])
    table["mab2rec_s"] = np.nan
    if theirs is not None:
        table.loc[table["stage"] == "total", "mab2rec_s"] = theirs["wall"]
    return table


def report(label: str, ours: dict, theirs: dict | None, comparison: pd.DataFrame | None) -> dict:
    table = stage_table(ours, theirs)
    print(f"\n## {label}\n")
    print(table.to_markdown(index=False, floatfmt=".1f"))
    summary = {"label": label, "ours_s": round(ours["wall"], 1), "ours_peak_gb": round(ours["peak_gb"], 2),
               "run": str(ours["path"])}
    print(f"\nours: {ours['wall']:.1f} s, peak memory {ours['peak_gb']:.2f} GB (PSS, process tree)")
    if theirs is not None:
        lists = theirs["lists"].set_index("policy")
        deterministic = comparison[comparison["deterministic"]]
        sampling = lists.drop(index=list(DETERMINISTIC), errors="ignore")
        threshold = 1e-3 / (3 * max(1, len(sampling)))  # Bonferroni over ranks and policies
        summary.update({
            "mab2rec_s": round(theirs["wall"], 1), "mab2rec_peak_gb": round(theirs["peak_gb"], 2),
            "speedup": round(theirs["wall"] / ours["wall"], 1),
            "deterministic_max_abs_diff": float(deterministic["abs_diff"].max()),
            "deterministic_identical_lists": float(lists.loc[list(DETERMINISTIC), "identical_lists"].min()),
            "sampling_min_p_value": float(sampling["min_p_value"].min()),
        })
        summary["deterministic_equal"] = bool((deterministic["abs_diff"] <= 1e-9).all()
                                              and summary["deterministic_identical_lists"] == 1.0)
        summary["sampling_same_distribution"] = bool(summary["sampling_min_p_value"] > threshold)
        print(f"Mab2Rec benchmark: {theirs['wall']:.1f} s, peak memory {theirs['peak_gb']:.2f} GB; "
              f"speed-up of our whole run: {summary['speedup']}x\n")
        print(lists.reset_index().to_markdown(index=False, floatfmt=".3g"))
        print(f"\ndeterministic policies {DETERMINISTIC}: max |ours - Mab2Rec| over every replay metric = "
              f"{summary['deterministic_max_abs_diff']:.2e}, identical lists: "
              f"{summary['deterministic_identical_lists']:.0%} ({'PASS' if summary['deterministic_equal'] else 'FAIL'})")
        print(f"sampling policies: smallest chi-square p-value (item shown at ranks 1-3, ours vs Mab2Rec) = "
              f"{summary['sampling_min_p_value']:.3g} vs Bonferroni threshold {threshold:.1e} "
              f"({'PASS' if summary['sampling_same_distribution'] else 'FAIL'})")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events of the synthetic shop (default 100000)")
    parser.add_argument("--items", type=int, default=1_000, help="items in its catalog (default 1000)")
    parser.add_argument("--compare-events", type=int, help="run plain Mab2Rec (and ours) at this size instead, and "
                                                           "ours alone at --events (e.g. 300000 with --events 1000000)")
    parser.add_argument("--no-mab2rec", action="store_true", help="time our pipeline only")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="base config (default: configs/default.yaml)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    summaries = []
    compare_at = None if args.no_mab2rec else (args.compare_events or args.events)
    if compare_at is not None:
        config = bench_config(args.config, compare_at, args.items, args.output_dir, args.overrides)
        ours = in_fresh_process(run_ours, config)
        theirs = in_fresh_process(run_mab2rec, config, ours["path"])
        comparison = compare_metrics(ours["metrics"], theirs["metrics"])
        comparison.to_csv(Path(ours["path"]) / "bench_metrics.csv", index=False)
        summaries.append(report(f"{compare_at:,} events x {args.items:,} items: ours and plain Mab2Rec", ours, theirs,
                                comparison))
    if compare_at != args.events:
        config = bench_config(args.config, args.events, args.items, args.output_dir, args.overrides)
        summaries.append(report(f"{args.events:,} events x {args.items:,} items: ours alone",
                                in_fresh_process(run_ours, config), None, None))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"bench-{args.events}x{args.items}.json"
    out.write_text(json.dumps(summaries, indent=2) + "\n")
    print(f"\nsummary: {out}")
    failed = [s for s in summaries if s.get("deterministic_equal") is False or s.get("sampling_same_distribution") is False]
    return 1 if failed else 0
