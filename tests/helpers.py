"""Helpers shared by test files (plain functions; fixtures live in conftest.py)."""

from pipeline.cli import main


def run_cli(config_path, capsys, *extra):
    """``python -m pipeline run CONFIG --quiet ...`` in-process: (exit code, stderr)."""
    code = main(["run", str(config_path), "--quiet", *extra])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_clean_failure(code, message, runs_dir, *fragments):
    """Exit 2, one paragraph naming every fragment, and nothing that looks like a run left behind."""
    assert code == 2
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # Nothing that looks like a run, complete or partial (the features cache, .cache, is not a run).
    assert not runs_dir.exists() or [p for p in runs_dir.iterdir() if p.name != ".cache"] == []
