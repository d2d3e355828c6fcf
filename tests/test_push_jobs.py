"""featsync push --jobs N: one view's latest rows as N disjoint slices pushed at once."""

from __future__ import annotations

import json
import os
import uuid

import duckdb
import pytest
import redis
from click.testing import CliRunner

from featsync.cli import main
from featsync.errors import USAGE_EXIT, FeatsyncError
from featsync.offline.sql import slice_number
from featsync.online.push import Pusher
from test_push import NOW, PAIRS, PROFILES, USERS, delete_keys, keys_of, load, pg_project, project  # noqa: F401


def _pusher(project, redis_url: str) -> Pusher:  # noqa: F811
    return Pusher(project, redis.Redis.from_url(redis_url), key_prefix=f"featsync-test-{uuid.uuid4().hex[:8]}")


def _online(pusher: Pusher) -> dict[tuple[str, bytes], bytes]:
    """(view, entity key) -> stored value, for every key of the pusher's views."""
    out = {}
    for view in pusher.views():
        prefix = pusher.layout(view).prefix.encode()
        for key in pusher.client.scan_iter(match=prefix + b"*", count=1000):
            out[(view.name, key[len(prefix) :])] = pusher.client.get(key)
    return out


def test_jobs_write_what_one_job_writes(project, redis_url):  # noqa: F811
    many = [(f"user{i}", NOW, None, i, "x") for i in range(200)]
    load([*USERS, *many], PAIRS, PROFILES)
    one, three = _pusher(project, redis_url), _pusher(project, redis_url)
    try:
        single = {s.feature_view: s for s in one.push()}
        sliced = {s.feature_view: s for s in three.push(jobs=3)}
        for view, stats in single.items():
            other = sliced[view]
            assert (other.rows_read, other.keys_written, other.skipped_expired) == (
                stats.rows_read,
                stats.keys_written,
                stats.skipped_expired,
            )
            assert (other.future_rows, other.newest_event_time) == (stats.future_rows, stats.newest_event_time)
            if stats.at_watermark:  # else each watermark is its own push's clock (fv_profile: a valid_to after it)
                assert (other.watermark, other.at_watermark) == (stats.watermark, stats.at_watermark)
        assert _online(one) == _online(three) and len(_online(one)) == 207
        # An incremental push with jobs reads only the changed rows, and moves the watermark.
        load([*USERS, *many, ("user7", NOW, NOW, 70, "new")], PAIRS, PROFILES)
        (incremental,) = three.push(["fv_user"], jobs=3)
        assert not incremental.full_refresh and incremental.keys_written >= 1
        assert incremental.rows_read < single["fv_user"].rows_read
    finally:
        delete_keys(one)
        delete_keys(three)


def test_a_failing_slice_leaves_the_watermark_where_it_was(project, redis_url):  # noqa: F811
    load(USERS, PAIRS, PROFILES)
    pusher = _pusher(project, redis_url)
    try:
        (first,) = pusher.push(["fv_user"], jobs=3)
        view = project.registry().feature_view("fv_user")
        before = pusher.state(view)
        assert before["watermark"] == first.watermark
        # New rows in every slice, and one that no slice can push: an instant past the year
        # 9999 (featsync refuses it, naming the row), changed after the watermark.
        load([*USERS, *((f"late{i}", NOW, NOW, i, "l") for i in range(30))], PAIRS, PROFILES)
        with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
            con.execute("insert into user_rows values ('far', timestamp '12000-01-01', timestamp '12000-01-01', 1, 'f')")
        with pytest.raises(FeatsyncError, match="far"):
            pusher.push(["fv_user"], jobs=3)
        after = pusher.state(view)
        assert after["watermark"] == before["watermark"] and after["last_push_at"] == before["last_push_at"]
        with duckdb.connect(os.environ["FEATSYNC_PIT_DUCKDB_PATH"]) as con:
            con.execute("delete from user_rows where user_id = 'far'")
        (rerun,) = pusher.push(["fv_user"], jobs=3)
        assert rerun.watermark > before["watermark"] and rerun.keys_written >= 30
    finally:
        delete_keys(pusher)


def test_jobs_on_postgres_slice_in_the_warehouse(pg_project, redis_url):  # noqa: F811
    pg, execute = pg_project
    rows = [*USERS, *((f"user{i}", NOW, None, i, "x") for i in range(100))]
    for table, content in (("user_rows", rows), ("pair_rows", PAIRS), ("profile_rows", PROFILES)):
        execute(f"delete from {table}")
        for row in content:
            execute(f"insert into {table} values ({', '.join(['%s'] * len(row))})", row)
    one, four = _pusher(pg, redis_url), _pusher(pg, redis_url)
    try:
        single = {s.feature_view: s.keys_written for s in one.push()}
        sliced = {s.feature_view: s.keys_written for s in four.push(jobs=4)}
        assert single == sliced and single["fv_user"] == 103
        assert _online(one) == _online(four)
    finally:
        delete_keys(one)
        delete_keys(four)


def test_slice_numbers_refuse_what_is_not_a_count():
    assert slice_number(["user_id", "merchant id"], 4, "duckdb") == 'coalesce(hash(user_id, "merchant id") % 4, 0)'
    for bad in (0, -1, True, "3"):
        with pytest.raises(FeatsyncError, match="slices"):
            slice_number(["user_id"], bad, "duckdb")


def test_the_cli_pushes_with_jobs(project, redis_url):  # noqa: F811
    load(USERS, PAIRS, PROFILES)
    prefix = f"featsync-test-{uuid.uuid4().hex[:8]}"
    where = ["--project-dir", str(project.project_dir), "--profiles-dir", str(project.profiles_dir)]
    where += ["--redis-url", redis_url, "--key-prefix", prefix]
    if project.target:
        where += ["--target", project.target]
    result = CliRunner().invoke(main, ["push", "--jobs", "2", "--skip-validation", "--json", *where])
    assert result.exit_code == 0, result.output
    assert sum(v["keys_written"] for v in json.loads(result.output)) == 7
    bad = CliRunner().invoke(main, ["push", "--jobs", "0", *where])
    assert bad.exit_code == USAGE_EXIT and "--jobs" in bad.output
    delete_keys(Pusher(project, redis.Redis.from_url(redis_url), key_prefix=prefix))
