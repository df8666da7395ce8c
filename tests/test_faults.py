"""Faults: a killed or terminated run leaves no process and no folder behind (or the next run removes it), and
runs with the same name started in the same second both complete."""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
import yaml

import pipeline.rundir
from pipeline.rundir import RunDirectory, remove_stale_partials

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pooled_config(tmp_path, tiny_settings):
    """The tiny shop with a pool of two worker processes (forced: small runs otherwise stay in-process)."""
    settings = {**tiny_settings, "executor": {"workers": 2, "threads_per_task": 1},
                "run": {"output_dir": str(tmp_path / "runs"), "name": "pooled"}}
    path = tmp_path / "pooled.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _default_ctrl_c() -> None:
    """A shell that starts the suite in the background (``make test &``) makes its children ignore SIGINT, and
    Python keeps an inherited ignore (as it should: that is how ``cmd &`` is protected from Ctrl-C); the runner
    under test must get Ctrl-C as a terminal would deliver it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_and_wait_for_workers(config: Path, tmp_path: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}  # so debris in the temp folder would be seen
    (tmp_path / "tmp").mkdir()
    runner = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(config), "--quiet"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=_default_ctrl_c)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = [child for child in psutil.Process(runner.pid).children(recursive=True)
                   if "spawn_main" in " ".join(child.cmdline())]
        if len(workers) >= 2:
            time.sleep(1.0)  # let them load the fold and start working
            return runner, workers
        if runner.poll() is not None:
            pytest.fail(f"the run ended before its workers started: {runner.stderr.read()}")
        time.sleep(0.1)
    runner.kill()
    pytest.fail("no pool workers appeared within 120 s")


def _left_in_temp(tmp_path: Path) -> list[str]:
    """Entries the run left in its temp folder, less PyTorch's own cache folder (``torchinductor_<user>``, made by
    importing torch and reused by every later run: not debris of this run)."""
    return [p.name for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor_")]


def _gone(processes: list[psutil.Process], seconds: float = 15) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return not alive


def test_kill_9_of_the_runner_ends_its_workers_and_the_next_run_removes_its_folder(pooled_config, tmp_path):
    runner, workers = _start_and_wait_for_workers(pooled_config, tmp_path)
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=10)
    assert _gone(workers), "pool workers outlived a runner killed with kill -9"
    runs = tmp_path / "runs"
    left = [p.name for p in runs.iterdir() if p.name != ".cache"]
    assert len(left) == 1 and left[0].startswith(".partial-")  # kill -9 cannot clean up; the next run does
    assert _left_in_temp(tmp_path) == []  # the shared fold file lived inside the partial folder
    # The next run in the same output folder removes it (in-process this time) and completes.
    done = subprocess.run([sys.executable, "-m", "pipeline", "run", str(pooled_config), "--quiet", "--set",
                           "executor.workers=1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    after = sorted(p.name for p in runs.iterdir() if p.name != ".cache")
    assert len(after) == 1 and not after[0].startswith(".partial-") and (runs / after[0] / "run.json").is_file()


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_clean_up_everything(pooled_config, tmp_path, signal_number):
    runner, workers = _start_and_wait_for_workers(pooled_config, tmp_path)
    runner.send_signal(signal_number)
    code = runner.wait(timeout=60)
    message = runner.stderr.read()
    assert code == 128 + signal_number, message
    assert "no run directory was written" in message and "Traceback" not in message
    assert _gone(workers)
    assert [p.name for p in (tmp_path / "runs").iterdir() if p.name != ".cache"] == []
    assert _left_in_temp(tmp_path) == []


def test_a_running_runs_folder_is_never_taken_for_stale(tmp_path):
    with RunDirectory(tmp_path, "busy") as running:
        assert remove_stale_partials(tmp_path) == []
        assert running.partial.is_dir()


def test_two_runs_with_one_name_in_the_same_second_both_complete(tmp_path, monkeypatch):
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)

    monkeypatch.setattr(pipeline.rundir, "datetime", FrozenClock)
    first, second = RunDirectory(tmp_path, "same"), RunDirectory(tmp_path, "same")
    with first:
        with second:
            second.complete({})
        first.complete({})
    assert (first.name, second.name) == ("20260105-120000-same", "20260105-120000-same-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, second.name]
    assert all((tmp_path / name / "run.json").is_file() for name in (first.name, second.name))
    third = RunDirectory(tmp_path, "same")
    with third:
        third.complete({})
    assert third.name == "20260105-120000-same-3"


def test_the_dashboard_listens_on_loopback_by_default():
    """`make dashboard` passes 127.0.0.1, and .streamlit/config.toml makes it the default of a bare
    `streamlit run` started from the repository root."""
    dry_run = subprocess.run(["make", "-n", "dashboard"], cwd=REPO, capture_output=True, text=True).stdout
    assert "--server.address 127.0.0.1" in dry_run
    from pipeline.localserver import free_port, wait_until_up

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port",
                               str(port), "--server.headless", "true"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until_up(f"http://127.0.0.1:{port}/_stcore/health") == b"ok"
        listening = {c.laddr.ip for c in psutil.Process(server.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"127.0.0.1"}
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_half_written_cache_file_of_a_killed_run_is_removed(tiny_config, tmp_path):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cache = tmp_path / "runs" / ".cache" / "features"
    cache.mkdir(parents=True)
    orphan = cache / f"0123.partial-{dead.pid}"
    orphan.write_bytes(b"half a file")
    alive = cache / f"4567.partial-{os.getpid()}"  # a run still writing: left alone
    alive.write_bytes(b"being written")
    run_pipeline(load_config(tiny_config), progress=False)
    assert not orphan.exists() and alive.exists()
