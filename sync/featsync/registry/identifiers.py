"""The rule for names that featsync writes into SQL unquoted: columns, feature views, on-demand names.

featsync refuses unsafe names when the registry loads instead of quoting them: a name
that passes reads the same, unquoted, on every engine (Postgres folds unquoted names to
lower case, Snowflake to upper case, so only lower-case names survive both), cannot
close a string or an identifier, and is no keyword. So the macros and the Python code
need no quoting, and a YAML typo or a hostile name never reaches a warehouse.

The rule: lower-case ASCII letters, digits and `_`, starting with a letter or `_`, at
most 63 characters (Postgres' limit), and not a reserved word of DuckDB, PostgreSQL or
Snowflake. Columns, spine columns and on-demand names may also not start with `featsync_`
(column_problem), the prefix of the columns featsync's own SQL adds. The macros apply the same rule (featsync._check_identifier in
macros/identifiers.sql, with the same word list; a test compares the two lists).
"""

from __future__ import annotations

import re

MAX_LENGTH = 63
_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")

# Reserved words of DuckDB (duckdb_keywords(): reserved and type_function), PostgreSQL
# (pg_get_keywords(): catcode R and T) and Snowflake (its documented reserved keywords).
RESERVED = frozenset(
    """
    account all alter analyse analyze and anti any array as asc asof asymmetric at authorization between binary both
    by case cast check collate collation column columns concurrently connect connection constraint create cross
    current current_catalog current_date current_role current_schema current_time current_timestamp current_user
    database default deferrable delete desc describe distinct do drop else end except exists false fetch following
    for foreign freeze from full generated glob grant group gscluster having ilike in increment initially inner
    insert intersect into is isnull issue join lambda lateral leading left like limit localtime localtimestamp map
    minus natural not notnull null of offset on only or order organization outer overlaps pivot pivot_longer
    pivot_wider placing positional primary qualify references regexp returning revoke right rlike row rows sample
    schema select semi session_user set show similar some start struct summarize symmetric system_user table
    tablesample then to trailing trigger true try_cast tuple union unique unpack unpivot update user using values
    variadic verbose view when whenever where window with
    """.split()
)


# The macros name their own helper columns and aliases featsync_* (featsync_asof,
# featsync_pick, featsync_spine_ts, ...): a column of the user's with such a name would be
# taken for one of them, so the names featsync reads from YAML and spines may not start so.
RESERVED_PREFIX = "featsync_"


def column_problem(name: object) -> str | None:
    """identifier_problem, and no name in featsync's own namespace (RESERVED_PREFIX)."""
    problem = identifier_problem(name)
    if problem is None and str(name).startswith(RESERVED_PREFIX):
        return f"'{name}' starts with '{RESERVED_PREFIX}', which featsync reserves for the columns its SQL adds; rename it"
    return problem


def identifier_problem(name: object) -> str | None:
    """Why `name` cannot be written into SQL unquoted; None when it can."""
    if not isinstance(name, str) or not _PLAIN.match(name) or len(name) > MAX_LENGTH:
        return (
            f"{name!r} is not a plain SQL name: featsync needs lower-case letters, digits and _, "
            f"starting with a letter or _, at most {MAX_LENGTH} characters"
        )
    if name in RESERVED:
        return f"'{name}' is a reserved SQL word; rename it (e.g. '{name}_value')"
    return None
