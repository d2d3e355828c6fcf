"""featsync's exceptions: every one says what went wrong and where."""

from __future__ import annotations

from dataclasses import dataclass


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
