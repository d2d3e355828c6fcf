"""featsync's exceptions: every one says what went wrong and where."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Exit codes (the README's table): 0 ok; 1 an error (environment, data, a missing extra);
# 2 invalid declarations or an unknown name; 3 a dbt command failed; 4 a check ran and found a
# problem (a failed expectation suite, a view the push gate held back, a drift / freshness /
# skew threshold breached); 64 a usage error (an unknown, missing or malformed option:
# sysexits' EX_USAGE, apart from 2 so that scripts can tell a typo from a broken project).
# Codes 1-3 and 64 mean featsync could not do its job; 4 means it did, and the data is not ok.
CHECK_FAILED_EXIT = 4
USAGE_EXIT = 64
# A number given on the command line that goes into SQL as a 64-bit integer (verify's --sample
# and --seed) must fit one: refused as a usage error (exit 64), never left for the warehouse's
# overflow to fail as if a table were missing.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


SHOWN_CHARS = 100  # of a value quoted in an error message


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut after SHOWN_CHARS characters with
    its length said. A refusal names what it refuses, but a 900 kB value must not come back
    as a 900 kB message (twice, in a server's error body: `detail` and Feast's `message`)."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{repr(value[:SHOWN_CHARS])[:-1]}…({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}…({len(text)} characters)"


class FeatsyncError(Exception):
    """Base class: a user-facing error. The CLI prints the message and exits non-zero."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One invalid declaration: the YAML file, the dbt node, the key and what is wrong."""

    file: str
    node: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.node}: {self.key}: {self.message}"


class UsageError(FeatsyncError):
    """A malformed argument: wrong syntax or an impossible value, whatever the project holds."""

    exit_code = USAGE_EXIT


class DeclarationError(FeatsyncError):
    """The project's YAML declarations are invalid. Lists every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"invalid featsync declarations ({len(self.problems)} {noun}):\n{lines}")


class DbtError(FeatsyncError):
    """A dbt command featsync ran for you failed."""

    exit_code = 3


class NotFoundError(FeatsyncError):
    """A feature view, service or entity that does not exist was asked for.

    `kind` says which ("feature view", "feature service", "feature", "entity"): the HTTP
    server names the matching Feast exception class from it (featsync.online.server).
    """

    exit_code = 2

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind
