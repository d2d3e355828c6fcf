"""The documentation keeps up with the code: every command and public macro is documented,
and every relative link in the docs resolves (file and heading anchor). No network, no dbt.

Commands come from walking the click group, macros from the macro files, so a new command
or macro fails here until docs/cli.md or docs/macros.md describes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from featsync.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Every markdown page whose links are checked.
PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *DOCS.glob("*.md")])
# The adapters a `<adapter>__<macro>` dispatch implementation may be named after.
DISPATCH_PREFIXES = ("default", "duckdb", "postgres", "snowflake", "spark", "bigquery", "redshift", "databricks")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MACRO = re.compile(r"\{%-?\s*(macro|test)\s+(\w+)\s*\((.*?)\)\s*-?%\}", re.S)


def strip_code(markdown: str) -> str:
    """Markdown without fenced blocks and inline code spans: neither holds headings or links."""
    without_fences = _FENCE.sub("", markdown)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", without_fences, flags=re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation other than
    '-' and '_' removed, spaces turned into '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", text)  # emphasis and code marks
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    return [(len(m.group(1)), m.group(2)) for m in _HEADING.finditer(_FENCE.sub("", markdown))]


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a page; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for _, text in headings(markdown):
        base = slug(text)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of the page whose file or heading anchor does not exist."""
    problems = []
    for target in _LINK.findall(strip_code(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}: [{target}]"
        shown = resolved.relative_to(root) if resolved.is_relative_to(root) else resolved
        if not resolved.exists():
            problems.append(f"{where}: no file {shown}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{where}: no heading with anchor '#{anchor}' in {shown}")
    return problems


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of a click group, as name paths."""
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(command_paths(command, (*prefix, name)))
    return paths


@dataclass(frozen=True)
class Macro:
    name: str
    arguments: tuple[str, ...]
    file: str


def split_arguments(text: str) -> tuple[str, ...]:
    """Argument names of a Jinja signature; defaults may hold commas inside brackets or quotes."""
    names, depth, quote, current = [], 0, "", ""
    for char in text + ",":
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            if current.strip():
                names.append(current.split("=", 1)[0].strip())
            current = ""
            continue
        current += char
    return tuple(names)


def public_macros() -> list[Macro]:
    """Every `{% macro %}` and generic `{% test %}` of the package (package/macros/*.sql) that is
    meant to be called: not `_private`, not a `<adapter>__name` dispatch implementation. (The
    example's macros and the generated one live in macros/, outside the package.)"""
    defined = []
    for path in sorted((ROOT / "package" / "macros").glob("*.sql")):
        defined += [(name, signature, path.name) for _, name, signature in _MACRO.findall(path.read_text(encoding="utf-8"))]
    names = {name for name, _, _ in defined}

    def dispatched(name: str) -> bool:  # `<adapter>__<macro>`: a known adapter, or the macro it implements exists
        adapter, sep, base = name.partition("__")
        return bool(sep) and (adapter in DISPATCH_PREFIXES or base in names)

    return [
        Macro(name, split_arguments(signature), file)
        for name, signature, file in defined
        if not name.startswith("_") and not dispatched(name)
    ]


def section(markdown: str, title: str) -> str | None:
    """The text under the heading titled `title` (code marks and a `featsync.` prefix ignored),
    up to the next heading of its level or above."""
    lines = _FENCE.sub(lambda m: m.group(0).replace("#", "\0"), markdown).splitlines()
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and m.group(2).replace("`", "").removeprefix("featsync.").strip() == title:
            level, body = len(m.group(1)), []
            for following in lines[i + 1 :]:
                n = _HEADING.match(following)
                if n and len(n.group(1)) <= level:
                    break
                body.append(following)
            return "\n".join(body).replace("\0", "#")
    return None


def test_every_command_is_in_the_cli_reference():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    titles = {m.group(2).replace("`", "").strip() for m in _HEADING.finditer(_FENCE.sub("", text))}
    missing = []
    for path in command_paths(main):
        usage = "featsync " + " ".join(path)
        if usage not in titles and not re.search(re.escape(usage) + r"(?![\w-])", text):
            missing.append(usage)
    assert not missing, f"docs/cli.md does not document: {', '.join(missing)}"


def test_every_option_is_in_its_command_section():
    """Each command's options appear in its section of docs/cli.md, or under Common options."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    common = section(text, "Common options") or ""
    missing = []
    for path in command_paths(main):
        command = main
        for name in path:
            command = command.commands[name]
        own = section(text, "featsync " + " ".join(path)) or ""
        for param in command.params:
            for option in [*param.opts, *param.secondary_opts]:
                if option.startswith("--") and option != "--help" and option not in own and option not in common:
                    missing.append(f"featsync {' '.join(path)} {option}")
    assert not missing, "docs/cli.md does not document: " + ", ".join(missing)


def test_tests_named_by_the_docs_exist():
    """`tests/x.py::test_y` (or `::test_y` after it, for the same file) names a real test."""
    problems = []
    for page in PAGES:
        current = None
        for m in re.finditer(r"`(tests/[\w/]+\.py)?::(test_\w+)`|`(tests/[\w/]+\.py)`", page.read_text(encoding="utf-8")):
            current = m.group(1) or m.group(3) or current
            if m.group(2) is None:
                continue
            source = ROOT / current if current else None
            if source is None or not source.exists() or not re.search(rf"def {m.group(2)}\(", source.read_text(encoding="utf-8")):
                problems.append(f"{page.relative_to(ROOT)}: {current}::{m.group(2)}")
    assert not problems, "no such test:\n  " + "\n  ".join(problems)


def test_the_command_walk_sees_every_command():
    """The walk is what guards the CLI reference, so check it finds what the group has."""
    names = {path[0] for path in command_paths(main)}
    assert {"list", "describe", "training-set", "push", "get", "serve", "validate", "drift", "status", "verify"} <= names


def test_every_public_macro_is_in_the_macros_reference_with_its_arguments():
    text = (DOCS / "macros.md").read_text(encoding="utf-8")
    problems = []
    for macro in public_macros():
        entry = section(text, macro.name)
        if entry is None:
            problems.append(f"{macro.name} ({macro.file}): no heading '{macro.name}'")
            continue
        undocumented = [a for a in macro.arguments if f"`{a}`" not in entry]
        if undocumented:
            problems.append(f"{macro.name} ({macro.file}): arguments not in its entry: {', '.join(undocumented)}")
    assert not problems, "docs/macros.md:\n  " + "\n  ".join(problems)


def test_the_macro_scan_finds_public_macros_and_skips_dispatch_and_private_ones():
    macros = {m.name: m for m in public_macros()}
    assert {"point_in_time_join", "window_aggregates", "latest_rows", "unique_combination"} <= set(macros)
    assert macros["point_in_time_join"].arguments == (
        "spine",
        "features",
        "feature_service",
        "spine_timestamp",
        "join_key_map",
        "full_feature_names",
        "as_of",
        "strategy",
        "spine_types",
    )
    assert not {"default__window_aggregates", "postgres__bytewise", "_pit_plan", "featsync_on_demand_sql"} & set(macros)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert not broken_links(page), "\n".join(broken_links(page))


def test_the_link_checker_catches_broken_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Page A\n\n## Point-in-time join: `pit_join.py`\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "docs" / "b.md"
    page.write_text(
        "[ok](a.md#point-in-time-join-pit_joinpy) [ok](a.md#twice-1) [ok](#b) [web](https://example.com/x#y)\n"
        "[no file](missing.md) [no anchor](a.md#nope) [self](#nowhere)\n"
        "```\n[in code](ignored.md)\n```\n`[inline](ignored.md)`\n# B\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/b.md: [missing.md]: no file docs/missing.md",
        "docs/b.md: [a.md#nope]: no heading with anchor '#nope' in docs/a.md",
        "docs/b.md: [#nowhere]: no heading with anchor '#nowhere' in docs/b.md",
    ]


def test_docs_index_links_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for target in _LINK.findall(strip_code(index))}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in linked]
    assert not missing, f"docs/README.md does not link: {', '.join(missing)}"
