"""End to end in a real browser: the app on a free loopback port, headless Debian Chromium via Playwright."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.config import load_config
from pipeline.localserver import free_port, wait_until_up
from pipeline.runner import run_pipeline

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("REQUIRE_BROWSER_TESTS"),
    reason="Debian's chromium is not installed (.ci/run installs it and sets REQUIRE_BROWSER_TESTS)",
)


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    settings = {"data": {"synthetic": {"n_users": 150, "n_items": 25, "n_events": 1200, "n_days": 7}},
                "features": {"item_text": {"schema": {"transform": ["tfidf", ["svd", {"n_components": 4}]]}}},
                "policies": {"Random": {"learning_policy": "Random"}, "LinUCB": {"learning_policy": "LinUCB"}},
                "evaluation": {"top_k": 5, "k_list": [1, 3, 5], "leaderboard_k": 3},
                "run": {"output_dir": str(root / "runs"), "name": "browser"}}
    (root / "c.yaml").write_text(yaml.safe_dump(settings))
    run = run_pipeline(load_config(root / "c.yaml"), progress=False).path
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py"), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--", "--runs", str(root / "runs")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if wait_until_up(f"{url}/_stcore/health") != b"ok":
        server.kill()
        pytest.fail("the Streamlit server did not answer on 127.0.0.1 within 60 s")
    yield url, run
    server.terminate()
    server.wait(timeout=10)


def test_browser_opens_switches_page_and_shows_the_leaderboard_value(served_run, tmp_path):
    from playwright.sync_api import sync_playwright

    url, run = served_run
    metrics = pd.read_parquet(run / "metrics.parquet")
    true_ctr = metrics.query("metric == 'true_ctr' and k == 3 and policy != 'Oracle'").groupby("policy")["value"].mean()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=60_000)
            page.get_by_role("heading", name="Decision").wait_for(timeout=60_000)  # the first page
            page.get_by_text("Metrics at k", exact=True).click()  # the sidebar's page selector
            page.get_by_role("heading", name="Metrics at k").wait_for(timeout=30_000)
            page.get_by_text("Leaderboard", exact=True).first.click()
            page.get_by_role("heading", name="Leaderboard").wait_for(timeout=30_000)
            page.get_by_test_id("stDataFrame").first.wait_for(timeout=30_000)  # the page has finished rendering
            page.wait_for_url("**page=Leaderboard**", timeout=30_000)  # the choice is written to the URL
            page.reload()  # the page survives a reload (its choice lives in the URL)
            page.get_by_role("heading", name="Leaderboard").wait_for(timeout=60_000)
            page.get_by_test_id("stDataFrame").nth(3).wait_for(timeout=30_000)  # all four tables rendered
            metric = page.get_by_test_id("stMetric")
            label = metric.get_by_test_id("stMetricLabel").inner_text()
            value = metric.get_by_test_id("stMetricValue").inner_text()
            widths = [frame.bounding_box()["width"] for frame in page.get_by_test_id("stDataFrame").all()]
            page.screenshot(path=str(REPO / "tests" / "artifacts" / "dashboard_leaderboard.png"), full_page=True)
        finally:
            browser.close()
    assert len(widths) == 4 and max(widths) <= 1400  # four narrower tables instead of one 2,090 px wide
    leader = true_ctr.idxmax()
    assert f"best true_ctr@3 (Oracle excluded): {leader}" in label
    assert value == f"{true_ctr[leader]:.4f}"
