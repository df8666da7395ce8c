"""NeuralLinear vs LinUCB by true value over several seeds (issue 3's acceptance table).

    python -m bench.neural_linear                       # default + non-linear configs, seeds 11..20
    python -m bench.neural_linear --seeds 5 --configs configs/default.yaml --set policies.LinTS=null

For each config and seed it runs the whole pipeline (data, split, features, all the config's policies)
and reads each policy's ``true_ctr@1`` (mean true click probability of its first item over the test
events).  It prints, per config, the mean over seeds with a 95% t-interval, and the paired difference
of each NeuralLinear variant against LinUCB (same data per seed, so the pairing removes data noise).
Results go to ``bench/results/neural_linear.csv`` too.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import pandas as pd

from pipeline.config import load_config
from pipeline.report import t_interval
from pipeline.runner import run_pipeline

RESULTS = Path(__file__).resolve().parent / "results"


def run(configs: list[str], seeds: list[int], overrides: list[str]) -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as output:
        for config_path in configs:
            for seed in seeds:
                config = load_config(config_path, [*overrides, f"seed={seed}", f"run.output_dir={output}"])
                started = time.perf_counter()
                outcome = run_pipeline(config, progress=False)
                values = outcome.metrics.query("metric == 'true_ctr' and k == 1").groupby("policy")["value"].mean()
                print(f"{config_path} seed {seed}: {time.perf_counter() - started:.1f} s, "
                      + ", ".join(f"{p} {v:.4f}" for p, v in values.items()), flush=True)
                rows += [(config_path, seed, policy, value) for policy, value in values.items()]
    return pd.DataFrame(rows, columns=["config", "seed", "policy", "true_ctr_at_1"])


def summary(results: pd.DataFrame, baseline: str) -> str:
    lines = []
    for config, frame in results.groupby("config", sort=False):
        wide = frame.pivot(index="seed", columns="policy", values="true_ctr_at_1")
        lines += [f"\n{config} ({len(wide)} seeds): true CTR@1, mean [95% CI]", "",
                  "| policy | true CTR@1 | vs " + baseline + " (paired) |", "| --- | --- | --- |"]
        order = wide.mean().sort_values(ascending=False).index
        for policy in order:
            mean, low, high = t_interval(wide[policy].to_numpy())
            diff = ""
            if policy != baseline and baseline in wide:
                d_mean, d_low, d_high = t_interval((wide[policy] - wide[baseline]).to_numpy())
                diff = f"{d_mean:+.4f} [{d_low:+.4f}, {d_high:+.4f}]"
            lines.append(f"| {policy} | {mean:.4f} [{low:.4f}, {high:.4f}] | {diff} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/default.yaml", "configs/nonlinear_synthetic.yaml"])
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=11,
                        help="first seed (NeuralLinear's defaults were tuned on seeds 1-4, so 11+ are held out)")
    parser.add_argument("--baseline", default="LinUCB")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override applied to every run, as in `pipeline run --set`")
    parser.add_argument("--output", default=str(RESULTS / "neural_linear.csv"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = run(args.configs, list(range(args.first_seed, args.first_seed + args.seeds)), args.overrides)
    Path(args.output).parent.mkdir(exist_ok=True)
    results.to_csv(args.output, index=False)
    print(summary(results, args.baseline))


if __name__ == "__main__":
    main()
