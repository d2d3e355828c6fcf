"""featsync's exceptions: every one says what went wrong and where."""

from __future__ import annotations

from dataclasses import dataclass

# The exit code of a check that ran and found a problem: a failed expectation suite, a view the
# push gate held back, a drift / freshness / skew threshold breached. Codes 1-3 mean featsync
# could not do its job (FeatsyncError and subclasses); 4 means it did, and the data is not ok.
CHECK_FAILED_EXIT = 4


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
    """A feature view, service or entity that does not exist was asked for."""

    exit_code = 2
