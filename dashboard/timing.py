"""Time every dashboard page on a run, cold (empty cache) and warm, the way Streamlit's test harness runs it.

    python -m dashboard.timing RUNS_DIR [--run NAME]

Each page is rendered headless with ``AppTest`` (the server-side work of a page view: reading files,
computing the page's tables and charts); the browser's drawing is not included.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent / "app.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", help="directory holding run directories")
    parser.add_argument("--run", help="run name (default: the newest)")
    args = parser.parse_args()
    os.environ["BANDIT_RUNS_DIR"] = args.runs
    probe = AppTest.from_file(APP, default_timeout=600).run()
    pages = probe.sidebar.radio[0].options
    run = args.run or probe.sidebar.selectbox[0].value
    print(f"run {run}")
    print(f"{'page':28s} {'cold s':>8s} {'warm s':>8s}  problems")
    for page in pages:
        timings = []
        for cold in (True, False):
            at = AppTest.from_file(APP, default_timeout=600).run()
            at.sidebar.selectbox[0].set_value(run).run()
            if cold:
                st.cache_data.clear()  # after the run is chosen: only the page itself is timed
            started = time.perf_counter()
            at.sidebar.radio[0].set_value(page).run()
            timings.append(time.perf_counter() - started)
        problems = [e.value for e in at.error] + [str(e.value) for e in at.exception]
        print(f"{page:28s} {timings[0]:8.2f} {timings[1]:8.2f}  {'; '.join(problems) or '-'}")


if __name__ == "__main__":
    main()
