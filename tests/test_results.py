"""Recorded results (featsync.results) and the logging options: files on disk, real processes."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import subprocess
import sys

from featsync import logs
from featsync.project import Project
from featsync.results import ResultCache, load_result, result_path, save_result, validation_failures, view_results


def _save_one(project_dir: str, view: str) -> None:
    save_result(Project.open(project_dir, project_dir, "dev"), "verify", {view: {"n": view}})


def test_each_run_replaces_its_views_and_keeps_the_others(project_copy):
    project = Project.open(project_copy, project_copy, "dev")
    assert load_result(project, "validate") == {} and view_results(project, "validate") == {}
    save_result(project, "validate", {"a": {"status": "failed", "results": [{"status": "failed"}, {"status": "passed"}]}})
    save_result(project, "validate", {"b": {"status": "passed", "results": [{"status": "passed"}]}})
    save_result(project, "validate", {"a": {"status": "passed", "results": []}, "c": {"status": "error", "results": []}})
    document = json.loads(result_path(project, "validate").read_text())
    assert document["kind"] == "validate" and document["updated_at"].endswith("Z")
    assert result_path(project, "validate") == project_copy / "target" / "featsync" / "dev" / "results" / "validate.json"
    views = view_results(project, "validate")
    assert sorted(views) == ["a", "b", "c"] and views["a"]["status"] == "passed"
    assert [validation_failures(views[v]) for v in "abc"] == [0, 0, 1]  # an errored suite counts as one failure
    assert validation_failures(None) is None
    assert not list(result_path(project, "validate").parent.glob("*.tmp"))  # the temporary file was renamed


def test_nan_is_written_as_null_and_a_corrupt_file_is_ignored(project_copy, caplog):
    project = Project.open(project_copy, project_copy, "dev")
    save_result(project, "drift", {"v": {"ks_pvalue": math.nan, "psi": math.inf, "nested": [{"x": -math.inf}]}})
    assert view_results(project, "drift")["v"] | {"recorded_at": None} == {
        "recorded_at": None,
        "ks_pvalue": None,
        "psi": None,
        "nested": [{"x": None}],
    }
    result_path(project, "drift").write_text("{not json")
    with caplog.at_level(logging.WARNING, "featsync.results"):
        assert view_results(project, "drift") == {}
        save_result(project, "drift", {"w": {"ok": True}})  # starts over rather than failing the check
    assert "ignoring the unreadable result file" in caplog.text
    assert list(view_results(project, "drift")) == ["w"]


def test_an_unwritable_target_is_a_warning_not_a_failure(project_copy, caplog):
    project = Project.open(project_copy, project_copy, "dev")
    project.target_path.mkdir(parents=True)
    (project.target_path / "results").write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING, "featsync.results"):
        assert save_result(project, "status", {"v": {}}) is None
    assert "could not record the status result" in caplog.text


def test_concurrent_runs_lose_no_view(project_copy):
    views = [f"view_{i}" for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.starmap(_save_one, [(str(project_copy), v) for v in views])
    assert sorted(view_results(Project.open(project_copy, project_copy, "dev"), "verify")) == views


def test_the_cache_rereads_a_changed_file_only(project_copy):
    project = Project.open(project_copy, project_copy, "dev")
    cache = ResultCache(project)
    assert cache.views("status") == {}
    save_result(project, "status", {"v": {"breaches": []}})
    first = cache.views("status")
    assert cache.views("status") is first  # unchanged file: the parsed dict is reused
    save_result(project, "status", {"v": {"breaches": ["never pushed"]}})
    assert cache.of("status", "v")["breaches"] == ["never pushed"]


# -- logging ------------------------------------------------------------------------------------


def test_json_log_lines_from_any_command(project_copy):
    """--log-level debug --log-format json: stderr is JSON lines (time, level, logger, message)."""
    result = subprocess.run(
        [sys.executable, "-m", "featsync", "list", "--project-dir", str(project_copy), "--json"]
        + ["--log-level", "debug", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines, "debug logging produced no line"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert all(line["time"].endswith("Z") for line in lines)
    assert any(line["logger"].startswith("featsync") for line in lines)
    json.loads(result.stdout)  # the command's own output is untouched

    quiet = subprocess.run(
        [sys.executable, "-m", "featsync", "list", "--project-dir", str(project_copy)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert quiet.returncode == 0 and quiet.stderr == ""  # default level warning: nothing to say


def test_text_and_json_formatters():
    record = logging.LogRecord("featsync.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.status = 200  # an access-log field
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["level"] == "warning" and line["message"] == "hello you" and line["status"] == 200
    text = logs.formatter("text").format(record)
    assert text.endswith("WARNING featsync.x: hello you") and "Z " in text
