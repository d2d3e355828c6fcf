"""The `featsync` command line: a thin click layer over the library.

Every command takes --project-dir, --target and --profiles-dir, prints rich tables by
default and JSON with --json, and exits non-zero with a one-line reason on failure.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pyarrow.parquet as pq
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from featsync import catalog, datagen, training
from featsync.errors import FeatsyncError
from featsync.project import Project

# Piped output gets a wide console so tables stay readable in logs and CI.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def project_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common project options and pass the opened Project as `project`."""

    @click.option(
        "--project-dir",
        type=click.Path(file_okay=False),
        default=None,
        envvar="FEATSYNC_PROJECT_DIR",
        help="dbt project directory (default: current directory).",
    )
    @click.option(
        "--profiles-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Directory with profiles.yml (default: the project's, else ~/.dbt).",
    )
    @click.option("--target", default=None, envvar="FEATSYNC_TARGET", help="dbt target (default: the profile's).")
    @functools.wraps(command)
    def wrapper(project_dir: str | None, profiles_dir: str | None, target: str | None, **kwargs: Any) -> Any:
        return command(Project.open(project_dir, profiles_dir, target), **kwargs)

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of tables.")


class FeatsyncGroup(click.Group):
    """Turns FeatsyncError into a clean message and its exit code instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FeatsyncError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("[bold red]interrupted:[/] work not finished was not marked done; re-run to complete it")
            sys.exit(130)


@click.group(cls=FeatsyncGroup)
@click.version_option(package_name="featsync")
def main() -> None:
    """featsync: dbt models as feature views, synced to Redis and served online."""


@main.command("list")
@project_options
@json_option
def list_command(project: Project, as_json: bool) -> None:
    """List feature views, feature services and entities."""
    data = catalog.catalog(project.registry())
    if as_json:
        _print_json(data)
        return
    out.print(
        _table(
            "Feature views",
            ("name", "version", "entities", "ttl", "online", "features"),
            [
                (v["name"], f"v{v['version']}", ", ".join(v["entities"]), v["ttl"], _yes(v["online"]), v["features"])
                for v in data["feature_views"]
            ],
        )
    )
    out.print(
        _table(
            "Feature services",
            ("name", "version", "exposure", "features", "feature views"),
            [
                (s["name"], f"v{s['version']}", s["exposure"], s["features"], ", ".join(s["feature_views"]))
                for s in data["feature_services"]
            ],
        )
    )
    out.print(
        _table(
            "Entities",
            ("name", "type", "feature views", "description"),
            [(e["name"], e["data_type"], ", ".join(e["feature_views"]), e["description"]) for e in data["entities"]],
        )
    )


@main.command()
@click.argument("name")
@project_options
@json_option
def describe(project: Project, name: str, as_json: bool) -> None:
    """Show one feature view, feature service (NAME, NAME:vN or exposure name) or entity."""
    data = catalog.describe(project.registry(), name)
    if as_json:
        _print_json(data)
        return
    kind = data["kind"].replace("_", " ")
    out.print(f"[bold]{data['name']}[/] ({kind}{', v' + str(data['version']) if 'version' in data else ''})")
    if data.get("description"):
        out.print(data["description"], markup=False, highlight=False)
    if data["kind"] == "feature_view":
        facts = []
        for key in (
            "relation",
            "entities",
            "timestamp",
            "created_timestamp",
            "valid_to",
            "ttl",
            "online",
            "owner",
            "tags",
            "file",
        ):
            value = data[key]
            if isinstance(value, list):
                value = ", ".join(value)
            elif isinstance(value, dict):
                value = ", ".join(f"{k}={v}" if v else k for k, v in value.items())
            facts.append((key, value))
        facts.append(("upstream sources", ", ".join(data["lineage"]["sources"]) or "-"))
        facts.append(("upstream models", ", ".join(data["lineage"]["models"]) or "-"))
        facts.append(("used by services", ", ".join(data["used_by"]["services"]) or "-"))
        facts.append(("used by models", ", ".join(data["used_by"]["models"]) or "-"))
        facts = _table(None, ("key", "value"), facts, show_header=False, box=None)
        out.print(facts)
        out.print(
            _table(
                "Columns",
                ("name", "type", "role", "description"),
                [(c["name"], c["data_type"], c["role"], c["description"]) for c in data["columns"]],
            )
        )
    elif data["kind"] == "feature_service":
        out.print(f"exposure: {data['exposure']}   owner: {data['owner'] or '-'}   file: {data['file']}", markup=False)
        out.print(_table("Features", ("feature view", "feature"), [ref.split(":", 1) for ref in data["features"]]))
    else:
        out.print(f"type: {data['data_type']}   feature views: {', '.join(data['feature_views'])}", markup=False)


@main.command("training-set")
@project_options
@click.option("--service", "feature_service", default=None, help="Feature service: NAME (latest), NAME:vN or exposure.")
@click.option("--features", "features", multiple=True, help="feature_view:feature or feature_view:* (repeatable).")
@click.option("--spine", required=True, help="Spine: a .parquet or .csv file, or a relation / dbt model name.")
@click.option("--spine-timestamp", default="event_timestamp", show_default=True)
@click.option(
    "--join-key-map",
    "join_key_map",
    multiple=True,
    metavar="KEY=COLUMN",
    help="Map a join key to a differently named spine column (repeatable).",
)
@click.option("--full-feature-names", is_flag=True, help="Name columns <feature_view>__<feature>.")
@click.option(
    "--as-of",
    type=click.Choice(["event", "available"]),
    default="event",
    show_default=True,
    help="'available' also requires created_timestamp <= the spine time.",
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Output parquet file.")
def training_set(
    project: Project,
    feature_service: str | None,
    features: tuple[str, ...],
    spine: str,
    spine_timestamp: str,
    join_key_map: tuple[str, ...],
    full_feature_names: bool,
    as_of: str,
    out_path: str,
) -> None:
    """Build a point-in-time correct training set into a parquet file (same macro as the models)."""
    mapping = {}
    for item in join_key_map:
        key, sep, column = item.partition("=")
        if not sep or not key or not column:
            raise click.BadParameter(f"'{item}' is not KEY=COLUMN", param_hint="--join-key-map")
        mapping[key] = column
    request = training.TrainingSetRequest(
        list(features) or None, feature_service, spine_timestamp, mapping, full_feature_names, as_of
    )
    path = Path(spine)
    source = training.read_spine(path, spine_timestamp) if path.suffix.lower() in (".csv", ".parquet") else spine
    table = training.get_historical_features(project, source, request)
    pq.write_table(table, out_path)
    out.print(f"wrote {table.num_rows} rows x {table.num_columns} columns to {out_path}", markup=False)


@main.command()
@project_options
@click.option("--select", "select", multiple=True, help="Only this feature view (repeatable). Default: every online view.")
@click.option(
    "--redis-url",
    default=None,
    envvar="FEATSYNC_REDIS_URL",
    help="redis:// or rediss:// URL (user, password, TLS). Default: an embedded Redis under the project.",
)
@click.option(
    "--key-prefix",
    default=None,
    envvar="FEATSYNC_KEY_PREFIX",
    help="Namespace of the online keys (default: the dbt project name).",
)
@click.option("--full-refresh", is_flag=True, help="Resend every latest row, not only those changed since the last push.")
@click.option("--dry-run", is_flag=True, help="Read and encode everything, write nothing.")
@json_option
def push(
    project: Project,
    select: tuple[str, ...],
    redis_url: str | None,
    key_prefix: str | None,
    full_refresh: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Push the latest row of every entity of the online feature views to Redis."""
    from featsync.push import Pusher, redis_client

    pusher = Pusher(project, redis_client(project, redis_url), key_prefix=key_prefix)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        console=err,
        disable=as_json,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(stats: Any) -> None:
            if stats.feature_view not in tasks:
                tasks[stats.feature_view] = bar.add_task(stats.feature_view, total=None, rows=0, rate=0.0)
            rate = stats.rows_read / stats.seconds if stats.seconds else 0.0
            bar.update(tasks[stats.feature_view], rows=stats.rows_read, rate=rate)

        results = pusher.push(select, dry_run=dry_run, full_refresh=full_refresh, progress=report)
    if as_json:
        _print_json([r.as_dict() for r in results])
        return
    title = "Push (dry run: nothing written)" if dry_run else "Push"
    out.print(
        _table(
            title,
            ("feature view", "version", "mode", "rows read", "keys written", "skipped stale", "skipped expired", "seconds"),
            [
                (
                    r.feature_view,
                    f"v{r.version}",
                    "full" if r.full_refresh else f"since {r.watermark}",
                    f"{r.rows_read:,}",
                    f"{r.keys_written:,}",
                    f"{r.skipped_stale:,}",
                    f"{r.skipped_expired:,}",
                    f"{r.seconds:.2f}",
                )
                for r in results
            ],
        )
    )


@main.command()
@project_options
@click.option("--service", "feature_service", default=None, help="Feature service: NAME (latest), NAME:vN or exposure.")
@click.option("--features", "features", multiple=True, help="feature_view:feature or feature_view:* (repeatable).")
@click.option(
    "--entity",
    "entities",
    multiple=True,
    required=True,
    metavar="KEY=VALUE",
    help="An entity key of the row to read (repeatable), e.g. --entity user_id=u0001.",
)
@click.option("--full-feature-names", is_flag=True, help="Name features <feature_view>__<feature>.")
@click.option("--redis-url", default=None, envvar="FEATSYNC_REDIS_URL", help="As for push.")
@click.option("--key-prefix", default=None, envvar="FEATSYNC_KEY_PREFIX", help="As for push.")
@json_option
def get(
    project: Project,
    feature_service: str | None,
    features: tuple[str, ...],
    entities: tuple[str, ...],
    full_feature_names: bool,
    redis_url: str | None,
    key_prefix: str | None,
    as_json: bool,
) -> None:
    """Read one entity's features from the online store."""
    from featsync.push import redis_client
    from featsync.serving import OnlineReader

    row = {}
    for item in entities:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--entity")
        row[key] = value
    reader = OnlineReader(project.registry(), redis_client(project, redis_url), key_prefix)
    response = reader.get([row], list(features) or None, feature_service, full_feature_names)
    if as_json:
        _print_json(response.to_dict(include_status=True))
        return
    out.print(
        _table(
            "Online features",
            ("feature", "value", "status"),
            [(name, values[0], response.statuses[name][0]) for name, values in response.features.items()],
        )
    )


@main.command()
@project_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0 for all).")
@click.option("--port", type=click.IntRange(0, 65535), default=6566, show_default=True, help="TCP port (Feast's default).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--redis-url", default=None, envvar="FEATSYNC_REDIS_URL", help="As for push.")
@click.option("--key-prefix", default=None, envvar="FEATSYNC_KEY_PREFIX", help="As for push.")
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most entity rows in one request (413 above).",
)
@click.option(
    "--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info", show_default=True
)
def serve(
    project: Project,
    host: str,
    port: int,
    workers: int,
    redis_url: str | None,
    key_prefix: str | None,
    max_batch: int,
    log_level: str,
) -> None:
    """Serve online features over HTTP (Feast-compatible POST /get-online-features, /health, /metrics)."""
    from featsync.server import serve as run_server

    run_server(project, host, port, workers, redis_url, key_prefix, max_batch, log_level)


@main.command()
@click.option(
    "--scale",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Size multiplier: 1 is the checked-in demo (4k transactions).",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed; same seed, same files.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="parquet", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="data/raw", show_default=True)
def generate(scale: int, seed: int, fmt: str, out_dir: str) -> None:
    """Write the example payments data (deterministic).

    CSV at scale 1 is what seeds/ holds; parquet files are read by dbt through the
    raw_parquet sources with --vars '{featsync_raw_data: parquet}'.
    """
    for path in datagen.write(Path(out_dir), scale=scale, seed=seed, fmt=fmt):
        out.print(f"wrote {path}")


def _table(title: str | None, columns: tuple[str, ...], rows: Any, **options: Any) -> Table:
    """A rich table whose cells are plain text (never markup) and fold instead of truncating."""
    table = Table(title=title, title_justify="left", **options)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(Text("" if v is None else str(v)) for v in row))
    return table


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _yes(value: bool) -> str:
    return "yes" if value else "no"
