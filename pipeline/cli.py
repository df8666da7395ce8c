"""Command line: ``python -m pipeline run CONFIG [--set key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import yaml

from pipeline.errors import PipelineError, describe_os_error
from pipeline.serving.cli import COMMANDS as SERVING_COMMANDS
from pipeline.serving.cli import add_commands as add_serving_commands

EPILOG = """examples:
  python -m pipeline run configs/default.yaml
  python -m pipeline run configs/default.yaml --set seed=7 --set policies.LinUCB.params.alpha=0.5
  python -m pipeline run configs/default.yaml --set policies.LinGreedy=null   # drop a policy
  python -m pipeline config configs/byo_example.yaml                           # validate, print resolved
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Evaluate contextual-bandit recommenders offline from a YAML config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in (("run", "run the pipeline and write a run directory"),
                            ("config", "validate a config and print it with every default filled in")):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("config", help="YAML config file, e.g. configs/default.yaml")
        command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="override a config key (dotted path, YAML value); repeatable")
        if name == "run":
            command.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    commands.add_parser("bench", add_help=False, help="time our pipeline against plain Mab2Rec on synthetic data "
                                                      "(python -m pipeline bench --help)")
    add_serving_commands(commands)
    return parser


def _quiet_library_warnings() -> None:
    # Library noise under pandas 2.3, not a user problem: jurity 2.1.0's fillna downcast (once per metric) and
    # mab2rec 1.3.1's np.array_split on a DataFrame (once per batch).
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"jurity\..*")
    warnings.filterwarnings("ignore", message="'DataFrame.swapaxes' is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message="A value is trying to be set on a copy", category=FutureWarning)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: cleaned up exactly like Ctrl-C."""


def _terminate_like_ctrl_c(signum, frame) -> None:
    for name in ("SIGTERM", "SIGHUP"):  # one clean-up: a second signal must not interrupt it
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    output_dir = args = None
    try:
        if argv[:1] == ["bench"]:
            from pipeline.bench import main as bench

            _quiet_library_warnings()
            logging.basicConfig(level=logging.WARNING)
            return bench(argv[1:])
        args = build_parser().parse_args(argv)
        _quiet_library_warnings()
        logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
        if args.command in SERVING_COMMANDS:
            if args.command == "train-stream":  # SIGTERM commits what was learnt, as Ctrl-C does
                for name in ("SIGTERM", "SIGHUP"):
                    signal.signal(getattr(signal, name), _terminate_like_ctrl_c)
            return SERVING_COMMANDS[args.command](args)
        from pipeline.config import load_config  # imported here so --help stays instant

        config = load_config(args.config, args.overrides)
        output_dir = config.run.output_dir
        if args.command == "config":
            print(yaml.safe_dump(config.resolved(), sort_keys=False), end="")
            return 0
        return run(config, args.quiet)
    except PipelineError as error:
        print(f"error: {with_set_origin(str(error), getattr(args, 'overrides', None) or [])}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interrupt:
        kind = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        print(f"{kind}: no run directory was written", file=sys.stderr)
        return 128 + (interrupt.args[0] if isinstance(interrupt, Terminated) else signal.SIGINT)
    except OSError as error:
        message = describe_os_error(error)
        if message is None:
            return internal_error(output_dir)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception:
        return internal_error(output_dir)


def with_set_origin(message: str, overrides: list[str]) -> str:
    """A data-stage error that names a key given with ``--set`` says so (config errors already do)."""
    if "(from --set)" in message:
        return message
    keys = [text.partition("=")[0].strip() for text in overrides]
    named = [key for key in keys if key and key in message]
    return message + (f" ({', '.join(named)} from --set)" if named else "")


def run(config, quiet: bool) -> int:
    from pipeline.offpolicy import OBSERVED, OBSERVED_SLATE, SLATE_ESTIMATORS
    from pipeline.report import format_decision, format_leaderboard, format_off_policy
    from pipeline.runner import run_pipeline

    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), _terminate_like_ctrl_c)
    outcome = run_pipeline(config, progress=not quiet)
    k = config.evaluation.leaderboard_k
    folds, seeds = outcome.metrics["fold"].nunique(), outcome.metrics["seed"].nunique()
    print(f"\nDecision - run {outcome.path}")
    print(format_decision(outcome.decision))
    print(f"\nLeaderboard (k={k}, mean over {folds} fold(s) and {seeds} seed(s); columns in order of trust: decision "
          "metric, truth, off-policy, replay)")
    print(format_leaderboard(outcome.leaderboard))
    if outcome.off_policy_pooled is not None:
        pooled = outcome.off_policy_pooled
        shown = [name for name in outcome.leaderboard_estimators if name not in SLATE_ESTIMATORS]
        print(f"\nOff-policy estimates at k={k} with 95% intervals and overlap (off_policy_pooled.csv, pooled over "
              "seeds and folds; '!' = flagged unreliable, the reason in its flag column):")
        print(format_off_policy(pooled, k, [*shown, OBSERVED]))
        slates = pooled[pooled["estimator"] == OBSERVED_SLATE]
        if len(slates):
            slots = int(slates["k"].iloc[0])
            print(f"\nSlate estimates: click rate per slot of each policy's top-{slots} list in the log's {slots}-slot "
                  "impressions (off_policy_pooled.csv):")
            print(format_off_policy(pooled, slots, [*SLATE_ESTIMATORS, OBSERVED_SLATE]))
    if outcome.off_policy_summary is not None:
        overall = outcome.off_policy_summary.query("policy == 'ALL'").set_index(["k", "estimator"])
        print("\nOff-policy estimates against the truth (true_ctr@k; slate estimators: true_slate_ctr@L) over all "
              "(policy, seed, fold) cases (off_policy_summary.csv):")
        print(overall[["cases", "bias", "rmse", "coverage", "mean_effective_sample_size", "unreliable_cases"]]
              .to_string(float_format="{:.4f}".format))
    if outcome.replay is not None:
        last = outcome.replay.groupby(["seed", "fold", "policy"], sort=False).tail(1)
        shown = last.groupby("policy", sort=False)[["accepted", "events_seen", "ctr", "low", "high"]].mean()
        print("\nReplay with learning (replay.csv): each policy's online CTR on the test log, learning from the "
              "events it is credited with; mean over seeds and folds:")
        print(shown.to_string(float_format="{:.4f}".format))
    if outcome.simulation_summary is not None:
        columns = ["cum_reward", "cum_regret", "regret_growth_ratio"]
        if outcome.simulation_summary["shock_step"].notna().any():
            columns += ["recovery_steps", "recovered"]
        sim = outcome.simulation_summary.groupby("policy", sort=False)[columns].first() \
            if outcome.simulation_summary["seed"].nunique() == 1 else outcome.simulation_summary
        print(f"\nOnline simulation ({config.simulation.steps} steps, {config.simulation.scenario}; simulation.csv):")
        print(sim.to_string(float_format="{:.3f}".format))
    if config.simulation.session_comparison.enabled:
        _print_sessions(outcome.path)
    for note in outcome.notes:
        print(f"note: {note}")
    print(f"\nfinished in {outcome.timings['total']:.1f} s")
    return 0


def _print_sessions(run: Path) -> None:
    import pandas as pd

    from pipeline import layout

    summary = pd.read_parquet(run / f"{layout.SESSIONS_SUMMARY}.parquet").set_index("agent")
    shown = pd.DataFrame({
        "return / session [95%]": [f"{r.return_per_session:.3f} [{r.return_per_session_low:.3f}, "
                                    f"{r.return_per_session_high:.3f}]" for r in summary.itertuples()],
        f"minus {summary['best_bandit'].iloc[0]} [95%]": [
            f"{r.minus_best_bandit:+.3f} [{r.minus_best_bandit_low:+.3f}, {r.minus_best_bandit_high:+.3f}]"
            for r in summary.itertuples()],
        "return visits / user": summary["return_visits_per_user"].round(3).to_numpy()}, index=summary.index)
    print("\nSessions (sessions_summary.csv): frozen agents on calendars they did not train on, mean over the "
          "reporting seeds, differences paired by seed:")
    print(shown.to_string())
    if (run / f"{layout.AB_SUMMARY}.parquet").exists():
        ab = pd.read_parquet(run / f"{layout.AB_SUMMARY}.parquet").set_index("kind")
        print("\nSimulated A/B tests (ab_summary.csv): share of tests each rule called significant:")
        print(ab[["tests", "mean_lift", "sequential_significant", "fixed_significant", "naive_daily_significant",
                  "median_decision_day"]].to_string(float_format="{:.3f}".format))


def internal_error(output_dir: Path | None) -> int:
    """A bug of ours, not the user's: one paragraph, the traceback in a file, exit code 1."""
    text = traceback.format_exc()
    name = f"error-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    report = None
    for folder in ([Path(output_dir) / ".errors"] if output_dir else []) + [Path(tempfile.gettempdir())]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"python -m pipeline {' '.join(sys.argv[1:])}\n\n{text}")
            report = folder / name
            break
        except OSError:
            continue
    last = text.strip().splitlines()[-1][:300]
    where = f"the full traceback is in {report}" if report else f"the traceback could not be saved:\n{text}"
    print(f"internal error: this is a bug in the pipeline, not a problem with your config or data ({last}); "
          f"{where}. Please report it with that file. No run directory was written.", file=sys.stderr)
    return 1
