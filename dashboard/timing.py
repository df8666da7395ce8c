"""Time every dashboard page on a run.

    python -m dashboard.timing RUNS_DIR [--run NAME]            # server side, cold (empty cache) and warm
    python -m dashboard.timing RUNS_DIR --browser               # in headless Chromium, first visit per page

Server side, each page is rendered with Streamlit's ``AppTest`` (reading files, computing the page's tables
and charts).  With ``--browser`` the app is started on a free loopback port and Debian's Chromium, driven by
Playwright, clicks each page in the sidebar; the time runs from the click until the page's title is shown
and Streamlit's app root reports the script finished (``data-test-script-state="notRunning"``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from pipeline.localserver import free_port, wait_until_up

APP = str(Path(__file__).resolve().parent / "app.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", help="directory holding run directories")
    parser.add_argument("--run", help="run name (default: the newest)")
    parser.add_argument("--browser", action="store_true", help="time page views in headless Chromium instead")
    args = parser.parse_args()
    os.environ["BANDIT_RUNS_DIR"] = args.runs
    if args.browser:
        return browser_timings(args.runs)
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


def browser_timings(runs: str) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true",
                               "--browser.gatherUsageStats", "false", "--", "--runs", runs],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/_stcore/health")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            started = time.perf_counter()
            page.goto(url, timeout=120_000)
            _wait_until_done(page, "Leaderboard")
            print(f"{'first load (Leaderboard)':28s} {time.perf_counter() - started:8.2f} s")
            labels = page.get_by_test_id("stSidebar").locator("label").all_inner_texts()
            for title in [label for label in labels if label and label not in ("run", "page")][1:]:
                started = time.perf_counter()
                page.get_by_test_id("stSidebar").get_by_text(title, exact=True).click()
                _wait_until_done(page, title)
                print(f"{title:28s} {time.perf_counter() - started:8.2f} s")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_until_done(page, title: str) -> None:
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=120_000)
    # Streamlit marks its app root with the script state; the title above is written once the new run started.
    page.wait_for_function(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === 'notRunning'",
        timeout=120_000)


if __name__ == "__main__":
    main()
