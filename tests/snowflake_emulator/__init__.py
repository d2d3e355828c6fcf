"""A Snowflake emulator for the tests: fakesnow's HTTP server, with shims for its gaps.

fakesnow (pinned to 0.12.1 in pyproject.toml: the shims below patch its internals, which
change between releases) runs Snowflake SQL on DuckDB. The tests point dbt-snowflake and
featsync's Snowflake reader at it through the real snowflake-connector over HTTP
(``profiles.yml`` here), so the connector's own login, query and Arrow-result code runs.

Shims (``shims.py``; test-only, nothing in the shipped macros knows about the emulator).
Each rewrites the *incoming Snowflake SQL* inside fakesnow's translation step, or fixes
fakesnow's own bookkeeping, so the SQL a real account would receive is what runs:

1. ``asof_match_condition``. Gap: fakesnow passes Snowflake's
   ``ASOF JOIN r MATCH_CONDITION (l.ts >= r.ts) ON l.k = r.k`` through to DuckDB, which
   has no MATCH_CONDITION. How: rewrite the parsed join to DuckDB's
   ``ASOF LEFT JOIN r ON l.k = r.k AND l.ts >= r.ts``: the same semantics (Snowflake's
   ASOF JOIN keeps every left row, NULLs when nothing matches).
2. ``temporary_as_permanent``. Gap: dbt creates ``temporary`` tables and views with
   database-qualified names (unit-test fixtures, the snapshot's staging view on the second
   run); DuckDB keeps temporaries in its own ``temp`` catalog and rejects the name. How:
   create them as ordinary tables/views (dbt replaces them on the next run). Unproven:
   Snowflake's session-scoping of temporary objects.
3. ``merge_insert_from_source``. Gap: in ``MERGE ... WHEN NOT MATCHED THEN INSERT (...)
   VALUES (col, ...)`` (dbt's snapshot merge) bare columns can only mean the source row in
   Snowflake; fakesnow runs MERGE as a join of target and source, where they are ambiguous.
   How: qualify them with the source alias.
4. ``no_comment_for_temporary``. Gap: fakesnow records each created table's comment in its
   own ``_fs_global`` database, also for the temporary ``merge_candidates`` table it builds
   for a MERGE; inside dbt's explicit ``begin ... commit`` around the snapshot MERGE the
   target database is already written and DuckDB allows one written database per
   transaction, so the MERGE failed and the client's retries hung on the aborted
   transaction. How: skip that bookkeeping for temporary tables.
5. ``null_timestamps``. Gap: over HTTP fakesnow encodes TIMESTAMP_NTZ as Snowflake's
   (epoch, fraction) struct without a validity bitmap, so NULL came back as 1970-01-01.
   How: give the struct the timestamp column's null mask.
6. ``copy_from_quoted_stage``. Gap: the connector's ``write_pandas`` (a spine file loaded
   for ``featsync training-set``) copies with ``COPY INTO t FROM (SELECT $1:"c" FROM
   '@schema.stage')``; Snowflake accepts the quoted stage, fakesnow reports "invalid URL
   prefix". How: unquote the stage name.

Not proven by the emulator (needs a real account): Snowflake's optimizer and cost of the
ASOF plan; warehouse sizing; transactions and concurrency; temporary-object scoping;
key-pair authentication and roles (fakesnow accepts any credentials); the connector's
multi-chunk result download from cloud storage (fakesnow returns one inline chunk, so
``fetch_arrow_batches`` yields a single batch per query here).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import fakesnow

from snowflake_emulator import shims

# fakesnow.server() imports its submodule fakesnow.server, which then shadows the function
# in the package: held here, before any emulator starts, so a second one (a test module's
# own, beside the session's build) can start too.
_start_server = fakesnow.server


@contextmanager
def serve() -> Iterator[int]:
    """Run the shimmed fakesnow server on a free loopback port in this process; yield the port."""
    shims.install()
    with _start_server() as connection:
        yield connection["port"]
