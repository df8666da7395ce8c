"""Streamlit dashboard over the pipeline's run directories.

    streamlit run dashboard/app.py                 # runs under ./runs
    streamlit run dashboard/app.py -- --runs DIR   # or BANDIT_RUNS_DIR=DIR

It only reads run directories (never retrains); a page whose files are missing or damaged shows a message
and the other pages keep working.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `streamlit run` does not add the repo root

from dashboard.data import RunDataError, list_runs  # noqa: E402
from dashboard.views.common import url_widget  # noqa: E402
from dashboard.views import (config, decision, explorer, items, leaderboard, metrics_at_k, off_policy,  # noqa: E402
                             sessions, simulation)

PAGES = [decision, leaderboard, metrics_at_k, off_policy, simulation, sessions, explorer, items, config]


def runs_root() -> Path:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default=os.environ.get("BANDIT_RUNS_DIR", "runs"))
    known, _ = parser.parse_known_args()
    return Path(known.runs)


def sidebar_run(runs):
    names = [run.name for run in runs]
    chosen = url_widget(st.sidebar.selectbox, "run", names, names[0], "run", help="newest first")
    run = runs[names.index(chosen)]
    info = run.info
    data = info.get("data", {})
    st.sidebar.markdown(
        f"**seeds** {', '.join(map(str, info.get('seeds', [])))}  \n"
        f"**split** {info.get('split')} ({len(info.get('folds', []))} fold(s))  \n"
        f"**data** {data.get('n_events', '?'):,} events, {data.get('n_items', '?')} items, contexts per "
        f"{data.get('context_level', '?')}  \n"
        f"**policies** {', '.join(info.get('policies', {}))}  \n"
        f"**ground truth** {'yes' if info.get('ground_truth') else 'no'}"
    )
    return run


def main() -> None:
    st.set_page_config(page_title="Bandit evaluation", layout="wide")
    root = runs_root()
    runs, problems = list_runs(root)
    for problem in problems:
        st.sidebar.warning(problem)
    if not runs:
        st.title("Bandit evaluation")
        st.info(f"No complete run under {root}. Run `python -m pipeline run configs/default.yaml` first.")
        return
    run = sidebar_run(runs)
    titles = [p.TITLE for p in PAGES]
    title = url_widget(st.sidebar.radio, "page", titles, titles[0], "page")  # survives a reload; a link can be shared
    page = PAGES[titles.index(title)]
    st.title(page.TITLE)
    try:
        page.render(run, runs)
    except RunDataError as error:
        st.error(str(error))
    except Exception as error:  # a damaged file must not take the app down: say what broke, keep the rest
        st.error(f"This page could not be shown for run {run.name}: {type(error).__name__}: {error}")


main()
