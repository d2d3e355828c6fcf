"""How long-running library calls report progress: a callback the CLI turns into a display.

``progress(what, done, total)``: what is being done now, and how far (``total`` None when
unknown). Library code calls it and never prints; the default does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int | None, int | None], None]


def silent(what: str, done: int | None = None, total: int | None = None) -> None:
    """The default: no display."""
