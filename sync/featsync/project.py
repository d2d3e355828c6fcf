"""A dbt project as featsync sees it: where it is, which target, and its manifest.

featsync keeps one manifest per target under ``target/featsync/<target>/`` (relation
names differ between targets) and runs ``dbt parse`` in-process, through dbt's own
``dbtRunner``, whenever that manifest is missing, older than any project file, or was
parsed under other values of the environment variables the profile and project read
(``env_var('FEATSYNC_PG_SCHEMA')`` changes every relation name without touching a file).

SQL that dbt compiles from featsync's macros for a command (push's latest rows) is cached
beside the manifest, keyed by the manifest's content hash: a command on an unchanged
project neither imports nor runs dbt (see ``compiled``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from featsync.errors import DbtError, FeatsyncError

if TYPE_CHECKING:
    from featsync.registry import Registry

# dbt's default folders, used when dbt_project.yml does not name its own.
_DEFAULT_PATHS = {
    "model-paths": ["models"],
    "macro-paths": ["macros"],
    "seed-paths": ["seeds"],
    "snapshot-paths": ["snapshots"],
    "test-paths": ["tests"],
    "analysis-paths": ["analyses"],
}
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "packages.yml", "dependencies.yml")
_ENV_VAR_CALL = re.compile(r"""env_var\(\s*['"]([^'"]+)['"]""")
# Files featsync writes into a project are announced as warnings: the CLI's log handler
# prints them on stderr, and without any logging set up Python prints warnings there too.
log = logging.getLogger(__name__)

# dbt's in-process runner keeps process-wide state (flags, the adapter registry, the invocation
# context), so two dbt commands running at once in two threads fail with errors such as
# KeyError 'postgres'. Every dbt command, and the parse-then-cache of a manifest and registry,
# holds this lock: a FeatureStore's push in one thread and its batch push in another are safe.
# Reentrant: registry() holds it while manifest() runs `dbt parse`.
_DBT_LOCK = threading.RLock()
# Bump when the layout of compiled.json changes.
_COMPILED_FORMAT = 1


@dataclass(frozen=True)
class Project:
    """A dbt project directory plus the profile target featsync works against."""

    project_dir: Path
    profiles_dir: Path
    target: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def open(
        cls,
        project_dir: str | os.PathLike | None = None,
        profiles_dir: str | os.PathLike | None = None,
        target: str | None = None,
    ) -> Project:
        root = Path(project_dir or os.environ.get("FEATSYNC_PROJECT_DIR") or ".").resolve()
        if not (root / "dbt_project.yml").is_file():
            raise FeatsyncError(f"{root} is not a dbt project (no dbt_project.yml)")
        if profiles_dir is None:
            profiles_dir = os.environ.get("DBT_PROFILES_DIR") or (
                root if (root / "profiles.yml").is_file() else Path.home() / ".dbt"
            )
        return cls(root, Path(profiles_dir).resolve(), target or os.environ.get("FEATSYNC_TARGET") or None)

    # -- dbt ---------------------------------------------------------------------

    def dbt_args(self, command: Sequence[str], target_path: Path | None = None) -> list[str]:
        args = [*command, "--project-dir", str(self.project_dir), "--profiles-dir", str(self.profiles_dir)]
        if self.target:
            args += ["--target", self.target]
        if target_path is not None:
            args += ["--target-path", str(target_path)]
        return args

    def run_dbt(self, command: Sequence[str], target_path: Path | None = None, quiet: bool = True) -> Any:
        """Run a dbt command in-process and return dbt's result; raise DbtError when it fails."""
        os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        from featsync.extras import require_adapter
        from featsync.offline.profiles import target_type

        adapter = target_type(self)
        if adapter is not None:  # else dbt's own error names what is wrong with the profile
            require_adapter(adapter, self.target)
        from dbt.cli.main import dbtRunner  # imported lazily: it costs about two seconds

        args = self.dbt_args(command, target_path)
        if quiet:  # errors still reach the DbtError below through the callback
            args = ["--log-level", "none", *args]
        errors: list[str] = []

        def collect(event: Any) -> None:  # dbt's own error lines, to say *why* it failed
            if event.info.level == "error" and event.info.msg:
                errors.append(str(event.info.msg).strip())

        with _DBT_LOCK:
            try:
                result = dbtRunner(callbacks=[collect]).invoke(args)
            finally:
                _release_duckdb()
        if not result.success:
            reason = "\n".join(dict.fromkeys(errors)) or str(result.exception or "") or _failed_nodes(result.result)
            raise DbtError(f"dbt {command[0]} failed in {self.project_dir}:\n{reason}")
        return result

    # -- manifest and registry ---------------------------------------------------

    @property
    def target_path(self) -> Path:
        return self.project_dir / "target" / "featsync" / (self.target or "default")

    @property
    def manifest_path(self) -> Path:
        return self.target_path / "manifest.json"

    @property
    def environment_path(self) -> Path:
        return self.target_path / "environment.json"

    def environment(self) -> dict[str, str | None]:
        """The values of the environment variables the profile and dbt_project.yml read.

        They shape the manifest (schemas, databases, paths) but are not files, so the
        manifest is re-parsed when one of them changes. Only these two files are scanned:
        `env_var()` in a model's config is not tracked (run `dbt parse` after changing it).
        """
        names: set[str] = set()
        for path in (self.profiles_dir / "profiles.yml", self.project_dir / "dbt_project.yml"):
            if path.is_file():
                names.update(_ENV_VAR_CALL.findall(path.read_text()))
        return {name: os.environ.get(name) for name in sorted(names)}

    def sources_fingerprint(self) -> str:
        """A hash of every source file's (path, mtime_ns, size): any file added, deleted or
        changed, whatever its new mtime (`cp -p`, `rsync -a` and `tar` keep an older one), gives
        another. One stat per file, as cheap as the walk: it runs before every command."""
        digest = hashlib.sha256()
        for path in sorted(self.source_files()):
            try:
                stat = path.stat()
            except OSError:  # deleted while walked: the next check sees it gone
                continue
            digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode(errors="surrogateescape"))
        return digest.hexdigest()

    def parse_inputs(self) -> dict[str, Any]:
        """What the manifest was parsed from, beside it in environment.json: the source files'
        fingerprint and the environment variables the profile and dbt_project.yml read."""
        return {"sources": self.sources_fingerprint(), "environment": self.environment()}

    def manifest_is_stale(self) -> bool:
        """Whether the manifest must be parsed again: missing, or parsed from other inputs (a file
        added, deleted or changed in any way, or an environment variable changed)."""
        if not self.manifest_path.is_file() or not self.environment_path.is_file():
            return True
        try:
            return json.loads(self.environment_path.read_text()) != self.parse_inputs()
        except (OSError, ValueError):
            return True

    def manifest(self, refresh: bool = False) -> dict[str, Any]:
        """The parsed manifest for this target, running `dbt parse` first when it is stale.

        The copy held in memory is the file's as long as the file is unchanged: another process
        (or Project) that re-parsed the project since, say after an environment variable the
        profile reads changed, replaced it, and then the file is read again. Else this Project
        would go on with an older manifest than the one on disk, which no longer looks stale,
        and key compiled SQL by a manifest no other process sees (see `compiled`).
        """
        with _DBT_LOCK:
            if refresh or self.manifest_is_stale():
                target = self.target or "default"
                log.info("dbt parse: the manifest of %s (target %s) is missing or stale", self.project_dir, target)
                inputs = self.parse_inputs()  # before parsing: a file changed meanwhile is seen next time
                self.run_dbt(["parse"], target_path=self.target_path)
                self.environment_path.write_text(json.dumps(inputs, indent=2))
                self._cache.pop("manifest_file", None)
            file = _file_identity(self.manifest_path)  # before reading: a replacement in between is seen next time
            if self._cache.get("manifest_file") != file:
                log.debug("reading the manifest %s", self.manifest_path)
                data = self.manifest_path.read_bytes()
                self._cache["manifest_hash"] = hashlib.sha256(data).hexdigest()
                self._cache["manifest"] = json.loads(data)
                self._cache["manifest_file"] = file
                self._cache.pop("registry", None)
            return self._cache["manifest"]

    @property
    def compiled_path(self) -> Path:
        return self.target_path / "compiled.json"

    def compiled(self, templates: dict[str, str], compile: Callable[[Project, dict[str, str]], dict[str, str]]) -> dict[str, str]:
        """SQL compiled by dbt from Jinja `templates` (by name), through a cache beside the manifest.

        An entry is reused only while its key holds: the manifest's content hash (a manifest is
        re-parsed whenever a model, YAML file, macro, the profile or an environment variable
        it reads changes, and it embeds every macro's source and the dbt version), the target,
        the featsync version and the template itself. Only the templates not cached go to
        `compile` (one dbt call for all of them), and their SQL is added to the cache.
        """
        self.manifest()
        base = {"format": _COMPILED_FORMAT, "manifest": self._cache["manifest_hash"], "target": self.target}
        base["featsync"] = _featsync_version()
        key = hashlib.sha256(json.dumps(base, sort_keys=True).encode()).hexdigest()
        try:
            cache = json.loads(self.compiled_path.read_text())
        except (OSError, ValueError):
            cache = {}
        entries = cache.get("entries", {}) if cache.get("key") == key else {}
        out = {name: entries[template]["sql"] for name, template in templates.items() if template in entries}
        missing = {name: template for name, template in templates.items() if name not in out}
        if missing:
            compiled = compile(self, missing)
            out.update(compiled)
            entries.update({template: {"sql": compiled[name]} for name, template in missing.items()})
            _write_atomic(self.compiled_path, json.dumps({"key": key, "entries": entries}, indent=1))
        return {name: out[name] for name in templates}

    def registry(self, refresh: bool = False) -> Registry:
        """The validated registry; built once per Project and reused."""
        from featsync.registry import Registry

        with _DBT_LOCK:
            manifest = self.manifest(refresh)
            if "registry" not in self._cache:
                self._cache["registry"] = Registry.from_manifest(manifest)
                self.write_on_demand_macro(self._cache["registry"])
            return self._cache["registry"]

    def write_on_demand_macro(self, registry: Registry) -> None:
        """Keep the generated macro with the on-demand features' compiled SQL in step with the YAML.

        `dbt build` then computes them without featsync running; the macro refuses to use an
        entry whose expression differs from the YAML, so a stale file fails loudly. It goes in
        the project's first macro path (dbt only compiles macros of the project or its
        packages, and the package folder may be shared or replaced by `dbt deps`); written
        only when its content changes, and every write is logged naming the file (a
        read-only project is left alone).
        """
        from featsync.ondemand.macro import MACRO_FILE, render_macro

        compiled = {f"{s.name}:v{s.version}": {f.name: f for f in s.on_demand} for s in registry.services.values()}
        macro_dir = self.project_dir / (self.config.get("macro-paths") or _DEFAULT_PATHS["macro-paths"])[0]
        path = macro_dir / MACRO_FILE
        text = render_macro(compiled)
        if not any(compiled.values()) and not path.exists():
            return
        try:
            if not path.exists() or path.read_text() != text:
                macro_dir.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                log.warning("wrote %s: the on-demand features' SQL compiled for dbt (generated; check it in)", path)
        except OSError:
            pass  # read-only project: dbt's own check reports a stale macro

    def source_files(self) -> Iterator[Path]:
        """Every file whose change can change the manifest, in this project and its local packages."""
        yield from _project_source_files(self.project_dir)
        if self.profiles_dir != self.project_dir and (self.profiles_dir / "profiles.yml").is_file():
            yield self.profiles_dir / "profiles.yml"
        packages = self.project_dir / "dbt_packages"
        if packages.is_dir():
            for package in packages.iterdir():
                if (package / "dbt_project.yml").is_file():
                    yield from _project_source_files(package)

    @cached_property
    def config(self) -> dict[str, Any]:
        with (self.project_dir / "dbt_project.yml").open() as fh:
            return yaml.safe_load(fh) or {}


def _project_source_files(root: Path) -> Iterator[Path]:
    try:
        with (root / "dbt_project.yml").open() as fh:
            config = yaml.safe_load(fh) or {}
    except OSError:
        return
    for name in _PROJECT_FILES:
        if (root / name).is_file():
            yield root / name
    for key, default in _DEFAULT_PATHS.items():
        for folder in config.get(key, default) or []:
            base = root / folder
            if base.is_dir():
                yield from (p for p in base.rglob("*") if p.is_file())


def _file_identity(path: Path) -> tuple[int, int, int]:
    """What changes when a file is rewritten or replaced: its inode, size and modification time."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _featsync_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("featsync")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def _write_atomic(path: Path, text: str) -> None:
    """Replace a file in one step, so that a concurrent reader sees the old or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in-process after an invocation.

    dbt-duckdb caches one database handle per process (DuckDBConnectionManager._ENV);
    while it is open, nothing else in this process can open the same file with another
    configuration (read-only, say), so featsync drops it after every dbt call.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # dbt-duckdb not installed: nothing to release
        return
    with DuckDBConnectionManager._LOCK:
        env, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if env is not None and getattr(env, "conn", None) is not None:
        env.conn.close()
        env.conn = None


def _failed_nodes(results: Any) -> str:
    failures = []
    for r in getattr(results, "results", None) or []:
        if str(getattr(r, "status", "")).lower() in {"error", "fail", "runtime error"}:
            failures.append(f"{r.node.name}: {r.message}")
    return "; ".join(failures) or "see dbt's output above"
