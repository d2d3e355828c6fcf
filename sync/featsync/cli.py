"""The `featsync` command line: a thin click layer over the library.

Every command takes --project-dir, --target and --profiles-dir, prints rich tables by
default and JSON with --json (errors too), and exits with the code of the README's table
(featsync.errors): 0 ok, 1 error, 2 invalid declarations or unknown name, 3 dbt failed,
4 a check failed, 64 a usage error. Commands that pick feature views take --select in
dbt's selector syntax (featsync.registry.selection).

Start-up matters (`featsync get` or a push every minute): this module imports only click,
rich and featsync.errors; everything else is imported inside the command that needs it, so
`featsync --help` never loads dbt, pyarrow, Great Expectations, scipy or Starlette.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from featsync import logs
from featsync.errors import BIGINT_MAX, BIGINT_MIN, CHECK_FAILED_EXIT, USAGE_EXIT, DeclarationError, FeatsyncError
from featsync.floats import json_float, map_floats

if TYPE_CHECKING:
    from featsync.progress import Progress
    from featsync.project import Project

# Piped output gets a wide console so tables stay readable in logs and CI.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
SELECT_HELP = (
    "Feature views to {what}, in dbt's selector syntax: NAME (wildcards *), tag:TAG, path:PATH, "
    "service:SERVICE, +NAME (with upstream), NAME+ (with downstream), A,B (both); repeatable. "
    "Default: {default}."
)


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
        from featsync.project import Project

        try:
            project = Project.open(project_dir, profiles_dir, target)
        except FeatsyncError as exc:
            raise FeatsyncError(f"{exc}; pass --project-dir") from exc
        return command(project, **kwargs)

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of tables (errors too).")


def select_option(what: str, default: str) -> Callable[..., Any]:
    return click.option(
        "--select", "-s", "select", multiple=True, metavar="SELECTOR", help=SELECT_HELP.format(what=what, default=default)
    )


def online_store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--redis-url and --key-prefix: which Redis, and which namespace in it (push, get, serve, status, verify)."""
    command = click.option(
        "--key-prefix",
        default=None,
        envvar="FEATSYNC_KEY_PREFIX",
        help="Namespace of the online keys (default: the dbt project name).",
    )(command)
    return click.option(
        "--redis-url",
        default=None,
        envvar="FEATSYNC_REDIS_URL",
        help="redis:// or rediss:// URL (user, password, TLS); redis+cluster:// for a cluster. "
        "Default: an embedded Redis under the project.",
    )(command)


access_log_option = click.option(
    "--access-log", is_flag=True, help="Log every HTTP request (featsync.access: client, method, path, status, duration)."
)

host_option = click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0: all; unsafe without a TLS proxy in front).",
)
auth_token_file_option = click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False),
    help="File holding the server's bearer token (not readable by all users): required by the UI pages and the write endpoints.",
)


class OutputPath(click.Path):
    """A path the command will write, checked before any work starts: a file's folder must exist
    and be writable, a folder is created now (it would be anyway). A directory given as a file
    is click's own refusal; every other failure is "cannot write PATH: REASON", a usage error,
    rather than a traceback after the work ran."""

    def __init__(self, folder: bool = False, suffix: str | None = None) -> None:
        super().__init__(file_okay=not folder, dir_okay=folder)
        self.folder = folder
        self.suffix = suffix  # the format the command writes: a file named otherwise is refused

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import os

        value = super().convert(value, param, ctx)
        path = Path(value)
        if self.suffix is not None and path.suffix.lower() != self.suffix:
            self.fail(f"{value}: the file is written as {self.suffix[1:]}; name it *{self.suffix}", param, ctx)
        try:
            if self.folder:
                path.mkdir(parents=True, exist_ok=True)
            elif not path.parent.is_dir():
                raise FileNotFoundError("no such folder")
            if not os.access(path if self.folder else path.parent, os.W_OK | os.X_OK):
                raise PermissionError("permission denied")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.fail(f"cannot write {value}: {reason[:1].lower()}{reason[1:]}", param, ctx)
        return value


def _require_service_or_features(feature_service: str | None, features: Sequence[str]) -> None:
    """training-set and get: the library's own check (featsync.registry.require_one_selection),
    made first here so the usage error names the flags, which library messages must not."""
    if (feature_service is None) == (not features):
        raise click.UsageError("give exactly one of --service or --features")


def _parse_now(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """--now as an aware UTC datetime; a malformed or zoneless value is a usage error."""
    if value is None:
        return None
    from featsync.quality.validate import resolve_now

    try:
        return resolve_now(value)
    except FeatsyncError as exc:
        raise click.BadParameter(str(exc)) from None


now_option = click.option(
    "--now",
    default=None,
    envvar="FEATSYNC_NOW",
    metavar="TIMESTAMP",
    callback=_parse_now,
    help="Reference time of freshness expectations, ISO with zone (default: the clock).",
)


# Long-running servers say where they listen (uvicorn logs it at info); other commands stay quiet.
SERVER_COMMANDS = frozenset({"serve", "ui"})


def with_logging(command: click.Command) -> click.Command:
    """--log-level and --log-format on a command: the stdlib root logger, configured before it runs."""
    default = "info" if command.name in SERVER_COMMANDS else "warning"
    command.params += [
        click.Option(
            ["--log-level"],
            type=click.Choice(logs.LEVELS),
            default=default,
            show_default=True,
            envvar="FEATSYNC_LOG_LEVEL",
            help="Log records at this level and above go to stderr.",
        ),
        click.Option(
            ["--log-format"],
            type=click.Choice(logs.FORMATS),
            default="text",
            show_default=True,
            envvar="FEATSYNC_LOG_FORMAT",
            help="text lines, or JSON lines (time, level, logger, message).",
        ),
    ]
    callback = command.callback

    @functools.wraps(callback)
    def configured(*args: Any, log_level: str, log_format: str, **kwargs: Any) -> Any:
        logs.configure(log_level, log_format)
        click.get_current_context().meta["featsync.logging"] = (log_level, log_format)
        return callback(*args, **kwargs)

    command.callback = configured
    return command


class FeatsyncGroup(click.Group):
    """Every command gets the logging options; every failure is one line (or a JSON object
    under --json) and the exit code of its kind, never a traceback.

    Click's own usage errors (an unknown, missing or malformed option) exit with USAGE_EXIT
    rather than click's 2, which featsync keeps for invalid declarations and unknown names.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(with_logging(cmd), name)

    def main(self, args: Sequence[str] | None = None, *pos: Any, standalone_mode: bool = True, **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(args, *pos, standalone_mode=False, **extra)
        as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
        try:
            code = super().main(args, *pos, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
            _fail(exc.format_message() + hint, USAGE_EXIT, "usage", as_json)
        except click.ClickException as exc:  # e.g. a file click could not open
            _fail(exc.format_message(), exc.exit_code, "error", as_json)
        except click.Abort:
            _fail("aborted", 1, "error", as_json)
        except FeatsyncError as exc:
            _fail(str(exc), exc.exit_code, _kind(exc), as_json, _details(exc))
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("[bold red]interrupted:[/] work not finished was not marked done; re-run to complete it")
            sys.exit(130)


def _kind(exc: FeatsyncError) -> str:
    from featsync.errors import DbtError, NotFoundError, UsageError
    from featsync.extras import MissingExtraError

    for cls, kind in (
        (DeclarationError, "invalid_declarations"),
        (NotFoundError, "not_found"),
        (DbtError, "dbt"),
        (UsageError, "usage"),
        (MissingExtraError, "missing_extra"),
    ):
        if isinstance(exc, cls):
            return kind
    return "error"


def _details(exc: FeatsyncError) -> dict[str, Any]:
    if isinstance(exc, DeclarationError):
        return {"problems": [vars(p) for p in exc.problems]}
    extra = getattr(exc, "extra", None)
    return {"extra": extra} if extra else {}


def _fail(message: str, code: int, kind: str, as_json: bool, details: dict[str, Any] | None = None) -> None:
    """Report an error and exit: one line on stderr, or {"error": ...} on stdout under --json."""
    if as_json:
        click.echo(json.dumps({"error": {"kind": kind, "exit_code": code, "message": message, **(details or {})}}, indent=2))
    else:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


@click.group("featsync", cls=FeatsyncGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="featsync")
def main() -> None:
    """featsync: dbt models as feature views, synced to Redis and served online."""


@contextmanager
def progress_display(enabled: bool = True) -> Iterator[Progress]:
    """A transient progress line on stderr for steps that take more than a second; off under --json
    and when stderr is not a terminal (a log gets the result, not the animation)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not (enabled and err.is_terminal),
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def report(what: str, done: int | None = None, total: int | None = None) -> None:
            bar.update(task, description=what, completed=done or 0, total=total)

        yield report


def _redis(project: Project, url: str | None, reads: bool = False) -> Any:
    """The Redis client of --redis-url; without one, the embedded server (an extra). reads:
    the read path's client, which fails fast against a hung Redis (connections.redis_client)."""
    from featsync.online.connections import redis_client

    with _embedded_hint():
        return redis_client(project, url, reads)


@contextmanager
def _embedded_hint() -> Iterator[None]:
    """Without the embedded extra, a missing Redis URL is the user's to give: say how."""
    from featsync.extras import MissingExtraError

    try:
        yield
    except MissingExtraError as exc:
        if exc.extra != "embedded":
            raise
        raise MissingExtraError(exc.extra, exc.what, ", or pass --redis-url (or set FEATSYNC_REDIS_URL)") from exc


@main.command("list")
@project_options
@json_option
def list_command(project: Project, as_json: bool) -> None:
    """List feature views, feature services and entities."""
    from featsync.registry import catalog

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
@click.argument("name", required=False)
@project_options
@select_option("describe", "none; give NAME or --select")
@json_option
def describe(project: Project, name: str | None, select: tuple[str, ...], as_json: bool) -> None:
    """Show a feature view, feature service (NAME, NAME:vN or exposure name) or entity by NAME,
    or every feature view --select picks (JSON: a list)."""
    from featsync.registry import catalog

    if (name is None) == (not select):
        raise click.UsageError("give a NAME or --select, not both" if name else "give a NAME or --select")
    registry = project.registry()
    if name is not None:
        items = [catalog.describe(registry, name)]
    else:
        items = [catalog.describe_feature_view(registry, view) for view in registry.select(select)]
    if as_json:
        _print_json(items[0] if name is not None else items)
        return
    for data in items:
        _print_description(data)


def _print_description(data: dict[str, Any]) -> None:
    kind = data["kind"].replace("_", " ")
    out.print(f"[bold]{escape(data['name'])}[/] ({kind}{', v' + str(data['version']) if 'version' in data else ''})")
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
        out.print(_table(None, ("key", "value"), facts, show_header=False, box=None))
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
        if data["on_demand"]:
            fields = [(f["name"], f["data_type"], f["default"] or "-", f["description"]) for f in data["request_fields"]]
            out.print(_table("Request fields", ("name", "type", "default", "description"), fields))
            computed = [(f["name"], f["data_type"], f["expression"]) for f in data["on_demand"]]
            out.print(_table("On-demand features", ("name", "type", "expression"), computed))
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
@click.option("--out", "out_path", required=True, type=OutputPath(suffix=".parquet"), help="Output parquet file.")
@json_option
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
    as_json: bool,
) -> None:
    """Build a point-in-time correct training set into a parquet file (same macro as the models)."""
    import pyarrow.parquet as pq

    from featsync.offline import training

    _require_service_or_features(feature_service, features)
    mapping = {}
    for item in join_key_map:
        key, sep, column = item.partition("=")
        if not sep or not key or not column:
            raise click.BadParameter(f"'{item}' is not KEY=COLUMN", param_hint="--join-key-map")
        if key in mapping:
            raise click.BadParameter(f"join key '{key}' is mapped twice", param_hint="--join-key-map")
        mapping[key] = column
    request = training.TrainingSetRequest(
        list(features) or None, feature_service, spine_timestamp, mapping, full_feature_names, as_of
    )
    path = Path(spine)
    source = training.read_spine(path, spine_timestamp) if path.suffix.lower() in (".csv", ".parquet") else spine
    with progress_display(not as_json) as progress:
        table = training.get_historical_features(project, source, request, progress=progress)
        progress(f"writing {out_path}", None, None)
        pq.write_table(table, out_path)
    if as_json:
        _print_json({"out": out_path, "rows": table.num_rows, "columns": table.column_names})
        return
    out.print(f"wrote {table.num_rows} rows x {table.num_columns} columns to {out_path}", markup=False)


def _push_rows(
    project: Project,
    select: tuple[str, ...],
    redis_url: str | None,
    key_prefix: str | None,
    rows_file: Path,
    to: str,
    batch_only: bool,
    skip_validation: bool,
    as_json: bool,
) -> None:
    """`featsync push --rows FILE --select VIEW`: the file's rows through featsync.online.ingest."""
    from featsync.errors import UsageError
    from featsync.online.ingest import RowIngest
    from featsync.online.rows import read_rows_file
    from featsync.registry.selection import parse_selectors

    parse_selectors(select)  # an empty one is refused as everywhere
    if len(select) != 1 or "," in select[0] or ":" in select[0] or "+" in select[0]:
        raise UsageError("--rows needs exactly one feature view name in --select (e.g. --select user_transaction_features)")
    if batch_only:
        raise UsageError("--rows takes none of --full-refresh, --dry-run, --fail-fast (they are about the warehouse push)")
    ingest = RowIngest(project, None if to == "offline" else _redis(project, redis_url), key_prefix)
    view = ingest.view(select[0])
    result = ingest.push(view.name, read_rows_file(view, rows_file), to, expectations=not skip_validation)
    if as_json:
        _print_json(result.as_dict())
        return
    stats = result.online
    rows = [
        (
            result.feature_view,
            result.to,
            f"{result.rows:,}",
            "" if stats is None else f"{stats.keys_written:,}",
            "" if stats is None else f"{stats.skipped_stale:,}",
            "" if stats is None else f"{stats.skipped_expired:,}",
            "" if stats is None else f"{stats.skipped_superseded:,}",
            result.offline_file or "",
        )
    ]
    columns = ("feature view", "to", "rows", "keys written", "skipped stale", "skipped expired", "superseded", "offline log")
    out.print(_table("Push rows", columns, rows))
    for note in result.notes:
        err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


@main.command()
@project_options
@click.option(
    "--from",
    "source_url",
    required=True,
    metavar="URL",
    help="The stream: redis://[user:password@]host[:port]/DB/STREAM (rediss:// for TLS).",
)
@click.option(
    "--select", "-s", "view", default=None, metavar="VIEW", help="The feature view of entries without a feature_view field."
)
@online_store_options
@click.option(
    "--to",
    type=click.Choice(["online", "offline", "online_and_offline"]),
    default="online",
    show_default=True,
    help="Write the rows online, to the views' offline push logs, or both.",
)
@click.option("--group", default="featsync", show_default=True, help="The consumer group (created if missing).")
@click.option(
    "--consumer", default=None, help="This consumer's name in the group (default: featsync-<hostname>); keep it across restarts."
)
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 100_000), help="Entries per micro-batch.")
@click.option("--block-ms", default=1000, show_default=True, type=click.IntRange(1), help="How long one read waits for entries.")
@click.option(
    "--claim-idle-ms",
    default=60_000,
    show_default=True,
    type=click.IntRange(1),
    help="Claim entries another consumer left unacknowledged this long (it died).",
)
@click.option(
    "--stop-when-idle",
    default=None,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Exit after this long without entries (default: run until interrupted).",
)
@json_option
def stream(
    project: Project,
    source_url: str,
    view: str | None,
    redis_url: str | None,
    key_prefix: str | None,
    to: str,
    group: str,
    consumer: str | None,
    batch: int,
    block_ms: int,
    claim_idle_ms: int,
    stop_when_idle: float | None,
    as_json: bool,
) -> None:
    """Consume a Redis stream of rows and push them in micro-batches (at-least-once, idempotent).

    Each entry holds one row as JSON in its `row` field, and optionally its view in
    `feature_view`. Rows go through the same checks and newest-wins writes as POST /push;
    entries that cannot be pushed go to the dead-letter stream STREAM:dead. Entries are
    acknowledged after they are written, so a killed consumer loses nothing: restarted
    under the same --consumer name, it first pushes what it had not acknowledged.
    """
    import redis as redis_lib

    from featsync.online.connections import check_redis_url
    from featsync.online.ingest import RowIngest
    from featsync.online.stream import StreamConsumer, StreamSource
    from featsync.registry.selection import parse_selectors

    parse_selectors([] if view is None else [view])  # an empty --select is refused as everywhere
    source = StreamSource.parse(source_url)
    check_redis_url(source.url)
    ingest = RowIngest(project, None if to == "offline" else _redis(project, redis_url), key_prefix)
    if view is not None:
        ingest.view(view)  # an unknown view is an error now, not a dead letter per entry
    options = {"group": group, "batch": batch, "block_ms": block_ms, "claim_idle_ms": claim_idle_ms}
    if consumer:
        options["consumer"] = consumer
    # Socket time-outs so that a silent network cut surfaces as an outage (retried) instead of a read blocked forever.
    client = redis_lib.Redis.from_url(source.url, socket_connect_timeout=5, socket_timeout=block_ms / 1000 + 10)
    worker = StreamConsumer(ingest, client, source.stream, view, to, **options)
    try:
        stats = worker.run(stop_when_idle)
    except KeyboardInterrupt:
        stats = worker.stats
    except redis_lib.RedisError as exc:  # outages are retried: this is a refusal (a wrong password, a command refused)
        raise FeatsyncError(f"stream {source.stream}: {exc}; stopped (not an outage: retrying cannot help)") from exc
    if as_json:
        _print_json({"stream": source.stream, **vars(stats)})
    else:
        out.print(
            f"stream {source.stream}: {stats.read} entries read, {stats.pushed} rows pushed, {stats.dead} dead, "
            f"{stats.retries} retries after outages",
            markup=False,
        )


@main.command()
@project_options
@select_option("push", "every online view")
@online_store_options
@click.option("--full-refresh", is_flag=True, help="Resend every latest row, not only those changed since the last push.")
@click.option("--dry-run", is_flag=True, help="Read and encode everything, write nothing.")
@click.option(
    "--skip-validation", is_flag=True, help="Push without running the views' expectation suites (shown in the summary)."
)
@click.option("--fail-fast", is_flag=True, help="If any view fails its suite, push nothing at all.")
@click.option(
    "--rows",
    "rows_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Push the rows of this .parquet or .csv file to the one view of --select instead of querying the warehouse.",
)
@click.option(
    "--to",
    type=click.Choice(["online", "offline", "online_and_offline"]),
    default="online",
    show_default=True,
    help="With --rows: write the rows online, to the view's offline push log, or both.",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Push each view as N disjoint slices (a hash of the entity key, computed in the warehouse) at once.",
)
@now_option
@json_option
def push(
    project: Project,
    select: tuple[str, ...],
    redis_url: str | None,
    key_prefix: str | None,
    full_refresh: bool,
    dry_run: bool,
    skip_validation: bool,
    fail_fast: bool,
    rows_file: Path | None,
    to: str,
    jobs: int,
    now: Any,
    as_json: bool,
) -> None:
    """Validate the online feature views, then push the latest row of every entity of those that pass to Redis.

    A view failing its suite (expectations/<view>.json) is not pushed; the others are,
    unless --fail-fast. The exit code is 4 when any view was held back. On an incremental
    push a view with nothing new since its last push is not validated again ('unchanged').

    With --rows FILE, the file's rows are pushed to the view named by --select instead,
    as FeatureStore.push and POST /push do: every row is checked first (types, NULL keys,
    the suite's row-level expectations), a bad one is named and nothing is written.
    """
    if rows_file is not None:
        batch_only = full_refresh or dry_run or fail_fast
        _push_rows(project, select, redis_url, key_prefix, rows_file, to, batch_only, skip_validation, as_json)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from featsync.extras import MissingExtraError
    from featsync.online.push import Pusher
    from featsync.online.state import StateError, StateKeyError
    from featsync.quality.gate import gated_push
    from featsync.quality.report import report_lines

    pusher = Pusher(project, _redis(project, redis_url), key_prefix=key_prefix)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]}"),
        TimeElapsedColumn(),
        console=err,
        disable=as_json or not err.is_terminal,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def validating(what: str, done: int | None = None, total: int | None = None) -> None:
            if "validation" not in tasks:
                tasks["validation"] = bar.add_task(what, total=total, rows="")
            bar.update(tasks["validation"], description=what, completed=done or 0, total=total)

        def report(stats: Any) -> None:
            if stats.feature_view not in tasks:
                tasks[stats.feature_view] = bar.add_task(stats.feature_view, total=None, rows="")
            rate = stats.rows_read / stats.seconds if stats.seconds else 0.0
            bar.update(tasks[stats.feature_view], rows=f"{stats.rows_read:,} rows {rate:,.0f} rows/s")

        try:
            gate = gated_push(
                pusher,
                select,
                skip_validation=skip_validation,
                fail_fast=fail_fast,
                now=now,
                dry_run=dry_run,
                full_refresh=full_refresh,
                progress=report,
                validation_progress=validating,
                jobs=jobs,
            )
        except StateKeyError:
            raise  # a full refresh cannot repair it: its message says what does
        except StateError as exc:
            raise StateError(f"{exc} (featsync push --full-refresh)") from exc
        except MissingExtraError as exc:
            if exc.extra != "quality":
                raise
            raise MissingExtraError(exc.extra, exc.what, ", or push with --skip-validation") from exc
    results = gate.pushed
    if as_json:
        _print_json(gate.as_dicts())
    else:
        title = "Push (dry run: nothing written)" if dry_run else "Push"
        out.print(
            _table(
                title,
                (
                    "feature view",
                    "version",
                    "validation",
                    "mode",
                    "rows read",
                    "keys written",
                    "skipped stale",
                    "skipped expired",
                    "seconds",
                ),
                [
                    (
                        r.feature_view,
                        f"v{r.version}",
                        gate.status_of(r.feature_view),
                        "full" if r.full_refresh else f"since {r.watermark}",
                        f"{r.rows_read:,}",
                        f"{r.keys_written:,}",
                        f"{r.skipped_stale:,}",
                        # of which deleted: the stored value they removed (not newer than them)
                        f"{r.skipped_expired:,}" + (f" ({r.deleted_expired:,} deleted)" if r.deleted_expired else ""),
                        f"{r.seconds:.2f}",
                    )
                    for r in results
                ]
                + [(name, "", gate.status_of(name), "NOT PUSHED", "", "", "", "", "") for name in gate.blocked],
            )
        )
        if gate.skip_validation:
            out.print("validation skipped (--skip-validation): the suites were not run", markup=False)
    if gate.blocked:
        failing = [v for v in gate.validations.values() if not v.success]
        for line in report_lines(failing):
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        reason = "--fail-fast: nothing was pushed" if gate.stopped else f"not pushed: {', '.join(gate.blocked)}"
        err.print(f"[bold red]error:[/] quality gate failed ({reason})", highlight=False, soft_wrap=True)
        sys.exit(CHECK_FAILED_EXIT)


@main.command()
@project_options
@select_option("validate", "every feature view")
@click.option("--junit", "junit_path", type=OutputPath(), default=None, help="Also write JUnit XML here.")
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=None,
    help="DuckDB, Snowflake: validate a documented sample of whole entities above this many rows (default 2,000,000).",
)
@now_option
@json_option
def validate(
    project: Project, select: tuple[str, ...], junit_path: str | None, max_rows: int | None, now: Any, as_json: bool
) -> None:
    """Run each feature view's Great Expectations suite (expectations/<view>.json); exit 4 on a failure."""
    from featsync.quality import validate as quality
    from featsync.quality.report import junit_xml, report_lines

    with progress_display(not as_json) as progress:
        results = quality.validate(project, select, now=now, max_rows=max_rows or quality.DEFAULT_MAX_ROWS, progress=progress)
    if junit_path:
        Path(junit_path).write_text(junit_xml(results))
    if as_json:
        _print_json([r.as_dict() for r in results])
    else:
        for line in report_lines(results):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    if not all(r.success for r in results):
        failed = [r.feature_view for r in results if not r.success]
        err.print(f"[bold red]error:[/] validation failed: {', '.join(failed)}", highlight=False, soft_wrap=True)
        sys.exit(CHECK_FAILED_EXIT)


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
@click.option(
    "--request",
    "request_items",
    multiple=True,
    metavar="NAME=VALUE",
    help="A request field of the service's on-demand features (repeatable), typed as declared, "
    "e.g. --request transaction_amount=500.",
)
@click.option("--full-feature-names", is_flag=True, help="Name features <feature_view>__<feature>.")
@online_store_options
@json_option
def get(
    project: Project,
    feature_service: str | None,
    features: tuple[str, ...],
    entities: tuple[str, ...],
    request_items: tuple[str, ...],
    full_feature_names: bool,
    redis_url: str | None,
    key_prefix: str | None,
    as_json: bool,
) -> None:
    """Read one entity's features from the online store."""
    from featsync.online.serving import OnlineReader

    _require_service_or_features(feature_service, features)
    row = {}
    for item in entities:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="--entity")
        if key in row:  # one row: a second value would silently replace the first
            raise click.BadParameter(f"'{key}' is given twice (one entity row per call)", param_hint="--entity")
        try:
            item.encode()
        except UnicodeEncodeError:  # bytes of another encoding on the command line
            raise click.BadParameter(f"{item!r} is not valid UTF-8 text", param_hint="--entity") from None
        row[key] = _entity_value(project.registry(), key, value)
    request_data = None
    reader = OnlineReader(project.registry(), _redis(project, redis_url, reads=True), key_prefix)
    if request_items:
        service = None
        if feature_service is not None:
            service = project.registry().service(feature_service)
        else:  # on-demand features by reference, '<service>:<feature>': their service's fields
            chosen = reader.split_on_demand(features)[1]
            service = chosen[0][1] if chosen else None
        if service is None:
            raise click.UsageError(
                "--request needs --service or an on-demand feature '<service>:<feature>': request fields belong to a service"
            )
        request_data = _parse_request_fields(service, request_items)
    response = reader.get([row], list(features) or None, feature_service, full_feature_names, request_data)
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
@host_option
@click.option("--port", type=click.IntRange(0, 65535), default=6566, show_default=True, help="TCP port (Feast's default).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@online_store_options
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most entity rows in one request (413 above).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=1 << 20,
    show_default=True,
    help="Largest request body accepted (413 above, before reading it).",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds a client may take to send a request's headers, and again its body (slow clients are cut off).",
)
@auth_token_file_option
@click.option("--auth-reads", is_flag=True, help="Require the token for /get-online-features too (needs --auth-token-file).")
@access_log_option
@click.option("--ui", is_flag=True, help="Also serve the feature-discovery pages under /ui (as `featsync ui` does).")
def serve(
    project: Project,
    host: str,
    port: int,
    workers: int,
    redis_url: str | None,
    key_prefix: str | None,
    max_batch: int,
    max_body_bytes: int,
    read_timeout: float,
    auth_token_file: str | None,
    auth_reads: bool,
    access_log: bool,
    ui: bool,
) -> None:
    """Serve online features over HTTP (Feast-compatible POST /get-online-features, /health, /metrics)."""
    from featsync.extras import needs

    if auth_reads and auth_token_file is None:
        raise click.UsageError("--auth-reads needs --auth-token-file")
    _check_now_env()
    token = _auth_token(auth_token_file)
    with needs("serve", "featsync serve"):
        from featsync.online import server
    level, fmt = click.get_current_context().meta["featsync.logging"]
    config = server.ServeConfig.of(
        project,
        redis_url=redis_url,
        key_prefix=key_prefix,
        max_batch=max_batch,
        ui=ui,
        auth_token=token,
        access_log=access_log,
        log_level=level,
        log_format=fmt,
        max_body_bytes=max_body_bytes,
        read_timeout=read_timeout,
        auth_reads=auth_reads,
    )
    with _embedded_hint():
        server.serve(project, config, host, port, workers)


def _check_now_env() -> None:
    """FEATSYNC_NOW is the "now" of every UI page and /metrics scrape (resolve_now): a value
    that does not parse would make each of them a 500, so the server refuses to start."""
    from featsync.quality.validate import resolve_now

    try:
        resolve_now()  # the clock when it is not set
    except FeatsyncError as exc:
        raise click.UsageError(f"FEATSYNC_NOW: {exc}") from None


def _auth_token(path: str | None) -> str | None:
    """The server's bearer token, read from --auth-token-file (never from the command line)."""
    from featsync.online.auth import read_token_file

    return None if path is None else read_token_file(path)


@main.command()
@project_options
@host_option
@click.option("--port", type=click.IntRange(0, 65535), default=8888, show_default=True, help="TCP port.")
@online_store_options
@auth_token_file_option
@access_log_option
def ui(
    project: Project,
    host: str,
    port: int,
    redis_url: str | None,
    key_prefix: str | None,
    auth_token_file: str | None,
    access_log: bool,
) -> None:
    """Browse the feature catalog in a web browser: views, services, lineage, freshness, validation, drift.

    The pages are under /ui (http://127.0.0.1:8888/ui/); the server's online endpoints run beside them.
    Offline: every asset ships with featsync.
    """
    from featsync.extras import needs

    _check_now_env()
    token = _auth_token(auth_token_file)
    with needs("serve", "featsync ui"):
        from featsync.online import server
    level, fmt = click.get_current_context().meta["featsync.logging"]
    config = server.ServeConfig.of(
        project, redis_url=redis_url, key_prefix=key_prefix, ui=True, auth_token=token, access_log=access_log,
        log_level=level, log_format=fmt,
    )  # fmt: skip
    with _embedded_hint():
        server.serve(project, config, host, port)


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
@click.option("--out", "out_dir", type=OutputPath(folder=True), default="data/raw", show_default=True)
@json_option
def generate(scale: int, seed: int, fmt: str, out_dir: str, as_json: bool) -> None:
    """Write the example payments data (deterministic).

    CSV at scale 1 is what seeds/ holds; parquet files are read by dbt through the
    raw_parquet sources with --vars '{featsync_raw_data: parquet}'.
    """
    from featsync import datagen

    with progress_display(not as_json) as progress:
        progress(f"generating scale {scale}", None, None)
        paths = [str(path) for path in datagen.write(Path(out_dir), scale=scale, seed=seed, fmt=fmt)]
    if as_json:
        _print_json({"files": paths})
        return
    for path in paths:
        out.print(f"wrote {path}", markup=False, highlight=False)


# Control characters other than tab and newline, shown escaped: a value anyone could push
# (text features, keys, YAML) must not drive the terminal (ANSI escape sequences).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _table(title: str | None, columns: tuple[str, ...], rows: Any, **options: Any) -> Table:
    """A rich table whose cells are plain text (never markup, control characters escaped) and
    fold instead of truncating."""
    table = Table(title=title, title_justify="left", **options)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        cells = ("" if v is None else str(v) for v in row)
        table.add_row(*(Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", cell)) for cell in cells))
    return table


def _print_json(data: Any) -> None:
    """Strict JSON: a NaN or infinite float is written as the string "NaN", "Infinity" or
    "-Infinity" (bare NaN is not JSON, and null would read as a missing value)."""
    click.echo(json.dumps(map_floats(data, json_float), indent=2, default=str, allow_nan=False))


def _yes(value: bool) -> str:
    return "yes" if value else "no"


# -- monitoring: drift, status, verify (CHECK_FAILED_EXIT when a threshold is breached) ----------


def _breach_table(title: str, columns: tuple[str, ...], rows: list[tuple[list[Any], bool]]) -> Table:
    """A table whose breached rows are red; cells are plain text, never markup."""
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold")
    for cells, breached in rows:
        table.add_row(*(Text("-" if v is None else str(v), style="red" if breached else "") for v in cells))
    return table


@main.command()
@project_options
@click.option(
    "--select",
    "-s",
    "select",
    multiple=True,
    metavar="SELECTOR",
    help="The feature view to compare, in dbt's selector syntax (as for push; it must pick exactly one view).",
)
@click.option("--feature-view", "feature_view", default=None, hidden=True, help="Deprecated: --select VIEW.")
@click.option(
    "--reference",
    required=True,
    metavar="START..END",
    help="Reference event-time window, UTC, e.g. 2024-01-01T00:00Z..2024-02-01T00:00Z.",
)
@click.option("--current", required=True, metavar="START..END", help="Current event-time window, UTC.")
@click.option("--html", "html_path", type=OutputPath(), default=None, help="Also write a self-contained HTML report.")
@json_option
def drift(
    project: Project,
    select: tuple[str, ...],
    feature_view: str | None,
    reference: str,
    current: str,
    html_path: str | None,
    as_json: bool,
) -> None:
    """Compare a feature view's distributions between two event-time windows (KS, PSI, chi-square, nulls)."""
    from featsync.monitoring import drift as drift_lib

    if feature_view is not None:
        if not as_json:
            err.print("note: --feature-view is deprecated; use --select", markup=False, highlight=False)
        select = (*select, feature_view)
    if not select:
        raise click.UsageError("Missing option '--select' (the feature view to compare).")
    windows = drift_lib.Window.parse(reference, "--reference"), drift_lib.Window.parse(current, "--current")
    views = project.registry().select(select)
    if len(views) != 1:
        names = ", ".join(v.name for v in views)
        raise click.UsageError(f"drift compares one feature view; --select picks {len(views)}: {names}")
    with progress_display(not as_json) as progress:
        report = drift_lib.drift(project, views[0].name, *windows, progress=progress)
    if html_path:
        Path(html_path).write_text(drift_lib.html_report(report), encoding="utf-8")
    if as_json:
        _print_json(report.as_dict())
    else:
        out.print(
            f"{report.feature_view}: reference {report.reference} ({report.reference_rows:,} rows) "
            f"vs current {report.current} ({report.current_rows:,} rows)",
            markup=False,
            highlight=False,
        )
        fmt = drift_lib.fmt_number
        out.print(
            _breach_table(
                "Drift (ranked)",
                ("#", "feature", "kind", "null rate", "KS", "KS p", "PSI", "chi² p", "max share Δ", "breach"),
                [
                    (
                        [
                            rank,
                            f.feature,
                            f.kind,
                            f"{f.null_rate_reference:.1%} → {f.null_rate_current:.1%}",
                            fmt(f.ks_statistic),
                            fmt(f.ks_pvalue, "{:.2g}"),
                            fmt(f.psi),
                            fmt(f.chi2_pvalue, "{:.2g}"),
                            None if f.share_change is None else f"{f.share_change:.1%} ({f.share_change_category})",
                            "; ".join(f.breaches) or "ok",
                        ],
                        bool(f.breaches),
                    )
                    for rank, f in enumerate(report.features, 1)
                ],
            )
        )
        for name, why in report.skipped.items():
            out.print(f"skipped {name}: {why}", markup=False, highlight=False)
        if html_path:
            out.print(f"wrote {html_path}", markup=False, highlight=False)
    if report.breached:
        sys.exit(CHECK_FAILED_EXIT)


@main.command()
@project_options
@select_option("report on", "every feature view")
@online_store_options
@click.option(
    "--count-keys/--no-count-keys", default=True, show_default=True, help="Count online keys (one SCAN of the whole keyspace)."
)
@json_option
def status(
    project: Project, select: tuple[str, ...], redis_url: str | None, key_prefix: str | None, count_keys: bool, as_json: bool
) -> None:
    """Freshness per feature view: newest offline event, last push and watermark, keys online, lag."""
    from featsync.monitoring import status as monitor

    with progress_display(not as_json) as progress:
        results = monitor.status(project, _redis(project, redis_url), key_prefix, select, count_keys, progress=progress)
    if as_json:
        _print_json([r.as_dict() for r in results])
    else:
        age = monitor.format_age

        def iso(value: Any) -> str | None:
            return None if value is None else value.strftime("%Y-%m-%d %H:%MZ")

        out.print(
            _breach_table(
                "Status",
                ("feature view", "newest event", "age", "last push", "watermark", "lag", "pending", "keys online", "breach"),
                [
                    (
                        [
                            f"{r.feature_view} v{r.version}",
                            iso(r.newest_event_time),
                            None if r.staleness_seconds is None else age(r.staleness_seconds),
                            iso(r.last_push_at) if r.online else "offline only",
                            iso(r.watermark),
                            None if r.lag_seconds is None else age(r.lag_seconds),
                            r.pending_rows,
                            None if r.online_keys is None else f"{r.online_keys:,}",
                            "; ".join(r.breaches) or "ok",
                        ],
                        bool(r.breaches),
                    )
                    for r in results
                ],
            )
        )
    if any(r.breaches for r in results):
        sys.exit(CHECK_FAILED_EXIT)


@main.command()
@project_options
@select_option("verify", "every online view")
@click.option(
    "--sample", type=click.IntRange(1, BIGINT_MAX), default=1000, show_default=True, help="Entities sampled per feature view."
)
@click.option(
    "--seed",
    type=click.IntRange(BIGINT_MIN, BIGINT_MAX),
    default=0,
    show_default=True,
    help="Another seed samples other entities.",
)
@online_store_options
@json_option
def verify(
    project: Project,
    select: tuple[str, ...],
    sample: int,
    seed: int,
    redis_url: str | None,
    key_prefix: str | None,
    as_json: bool,
) -> None:
    """Check online against offline: sampled entities read from Redis vs their latest rows recomputed by push's SQL."""
    from featsync.monitoring import verify as monitor

    with progress_display(not as_json) as progress:
        progress("sampling and comparing", None, None)
        results = monitor.verify(project, _redis(project, redis_url), key_prefix, select, sample, seed)
    if as_json:
        _print_json([r.as_dict() for r in results])
    else:
        out.print(
            _breach_table(
                "Verify: online against the warehouse (push's SQL)",
                ("feature view", "sampled", "online", "expired offline", "missing online", "values differing", "breach"),
                [
                    (
                        [
                            f"{r.feature_view} v{r.version}",
                            r.sampled,
                            r.present_online,
                            r.expired_offline,
                            r.missing_online,
                            f"{r.mismatches} of {sum(c.checked for c in r.checks)}",
                            "; ".join(r.breaches) or "ok",
                        ],
                        bool(r.breaches),
                    )
                    for r in results
                ],
            )
        )
        for r in results:
            differing = [c for c in r.checks if c.mismatches]
            if differing:
                out.print(
                    _table(
                        f"{r.feature_view}: mismatches",
                        ("feature", "mismatches", "rate", "examples (entity: online / offline)"),
                        [
                            (
                                c.feature,
                                f"{c.mismatches} of {c.checked}",
                                f"{c.rate:.1%}",
                                "; ".join(f"{e['entity']}: {_plain(e['online'])} / {_plain(e['offline'])}" for e in c.examples),
                            )
                            for c in differing
                        ],
                    )
                )
    if any(r.breaches for r in results):
        sys.exit(CHECK_FAILED_EXIT)


@main.command()
@project_options
@online_store_options
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
@json_option
def prune(project: Project, redis_url: str | None, key_prefix: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete the online keys of feature-view versions and column layouts the registry no longer has.

    A new version, or columns changed without one, are pushed to new keys; the old ones stay
    (for readers not yet redeployed, and for rollback) until this removes them.
    """
    from featsync.online.prune import prune as run_prune

    def unreadable(message: str) -> None:  # on stderr, also under --json: stdout stays the list of orphans
        err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

    orphans = run_prune(project.registry(), _redis(project, redis_url), key_prefix, dry_run, unreadable)
    if as_json:
        _print_json([o.as_dict() for o in orphans])
        return
    title = "Prune (dry run: nothing deleted)" if dry_run else "Prune"
    rows = [(o.identity, o.view_id, o.layout or "-", f"{o.keys:,}") for o in orphans]
    out.print(_table(title, ("owner", "view id", "layout", "keys"), rows))
    if not orphans:
        out.print("nothing to prune: every view id of this key prefix is in use", markup=False)


def _plain(value: Any) -> Any:
    """Example values for people: UTC times as ISO 8601 with Z."""
    from datetime import datetime

    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value


def _entity_value(registry: Any, key: str, text: str) -> str | int:
    """An --entity value typed by its entity: an integer key as the int (`01` is 1), text as given."""
    from featsync.registry.types import INT

    entity = registry.entities.get(key)
    if entity is None or registry.feature_view(entity.feature_views[0]).column(key).type.kind != INT:
        return text  # text, or no such entity (the reader names the known ones)
    if not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        raise click.BadParameter(f"entity '{key}' is an integer; {text!r} is not one", param_hint="--entity")
    return int(text)


def _parse_request_fields(service: Any, items: Sequence[str]) -> dict[str, Any]:
    """--request NAME=VALUE texts as request fields, each typed by its declaration."""
    from featsync.errors import NotFoundError

    fields = {f.name: f for f in service.request_fields}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"'{item}' is not NAME=VALUE", param_hint="--request")
        if name not in fields:
            known = ", ".join(fields) or "none"
            raise NotFoundError(
                f"unknown request field '{name}' for feature service '{service.name}:v{service.version}' (fields: {known})"
            )
        try:
            values[name] = fields[name].parse(text)
        except FeatsyncError as exc:
            raise click.BadParameter(str(exc), param_hint="--request") from None
    return values
