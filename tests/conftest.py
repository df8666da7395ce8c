"""Shared fixtures: small but real configs, built from the same schema the CLI uses."""

import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_config
from pipeline.runner import run_pipeline

from helpers import start_redis

REPO = Path(__file__).resolve().parent.parent

#: A synthetic shop small enough for a full run in a few seconds.
TINY_SYNTHETIC = {
    "seed": 3,
    "data": {"synthetic": {"n_users": 200, "n_items": 30, "n_events": 1500, "n_days": 7}},
    "features": {"item_text": {"schema": {"transform": ["tfidf", ["svd", {"n_components": 4}]]}}},
    "evaluation": {"top_k": 5, "k_list": [1, 3, 5], "leaderboard_k": 3},
}


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict to a YAML file whose runs go under tmp_path/runs; return the file's path."""

    def write(data: dict, name: str = "config.yaml") -> Path:
        data = {**data, "run": {"output_dir": str(tmp_path / "runs"), **data.get("run", {})}}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def tiny_settings() -> dict:
    """A fresh copy of the tiny synthetic config, for tests that change a key."""
    return copy.deepcopy(TINY_SYNTHETIC)


@pytest.fixture
def tiny_config(write_config, tiny_settings) -> Path:
    return write_config(tiny_settings)


@pytest.fixture
def sample_files(tmp_path):
    """Copies of the committed BYO sample files, which a test may corrupt freely."""
    target = tmp_path / "sample"
    target.mkdir()
    for source in (REPO / "data" / "sample").glob("*.csv"):
        (target / source.name).write_text(source.read_text())
    return target


@pytest.fixture
def byo_config(write_config, sample_files):
    """A config over the sample files, with the BYO example's settings."""

    def make(**changes) -> Path:
        data = yaml.safe_load((REPO / "configs" / "byo_example.yaml").read_text())
        files = data["data"]["files"]
        for key in ("interactions", "user_features", "item_features"):
            files[key] = str(sample_files / Path(files[key]).name)
        for dotted, value in changes.items():
            node = data
            *parents, last = dotted.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        return write_config(data)

    return make


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A small run with LinUCB and Popularity trained (25 items), served by the service tests."""
    root = tmp_path_factory.mktemp("serve")
    settings = {"data": {"synthetic": {"n_users": 150, "n_items": 25, "n_events": 1200, "n_days": 7}},
                "features": {"item_text": {"schema": {"transform": ["tfidf", ["svd", {"n_components": 4}]]}}},
                "policies": {"LinUCB": {"learning_policy": "LinUCB"}, "Popularity": {"learning_policy": "Popularity"}},
                "evaluation": {"top_k": 5, "k_list": [1, 5], "leaderboard_k": 5, "bootstrap_resamples": 0},
                "run": {"output_dir": str(root / "runs"), "name": "serve"}}
    (root / "c.yaml").write_text(yaml.safe_dump(settings))
    return run_pipeline(load_config(root / "c.yaml"), progress=False).path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """Redis on loopback: the one .ci/run started (BANDIT_TEST_REDIS_URL), or one started here."""
    if os.environ.get("BANDIT_TEST_REDIS_URL"):
        yield os.environ["BANDIT_TEST_REDIS_URL"]
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("REQUIRE_SERVICE_TESTS"):
            pytest.fail("redis-server is not installed but REQUIRE_SERVICE_TESTS is set")
        pytest.skip("redis-server is not installed (.ci/run installs and starts it)")
    server, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    server.terminate()
    server.wait(timeout=10)
