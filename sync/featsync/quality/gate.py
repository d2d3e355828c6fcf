"""The push gate: validate the selected online views, push only those whose suites pass."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from featsync.errors import NotFoundError
from featsync.progress import Progress, silent
from featsync.quality.validate import DEFAULT_MAX_ROWS, ViewValidation, validate


@dataclass
class GatedPush:
    """What `featsync push` did behind its quality gate."""

    skip_validation: bool
    validations: dict[str, ViewValidation]  # empty when validation was skipped
    pushed: list[Any]  # featsync.online.push.PushStats of the views pushed
    blocked: list[str]  # views not pushed because their suite failed (or, with fail-fast, another's did)
    stopped: bool = False  # fail_fast stopped everything
    unchanged: list[str] = field(default_factory=list)  # nothing new since their last push: not validated again

    @property
    def success(self) -> bool:
        return not self.blocked

    def as_dicts(self) -> list[dict[str, Any]]:
        """One dict per view: the push stats (if pushed) with 'pushed' and 'validation' added."""
        rows = []
        for stats in self.pushed:
            rows.append({**stats.as_dict(), "pushed": True, "validation": self.status_of(stats.feature_view)})
        for name in self.blocked:
            validation = self.validations.get(name)
            rows.append(
                {
                    "feature_view": name,
                    "pushed": False,
                    "validation": self.status_of(name),
                    "failures": [r.describe() for r in validation.failures] if validation else [],
                }
            )
        return rows

    def status_of(self, view: str) -> str:
        if self.skip_validation:
            return "skipped"
        if view in self.unchanged:
            return "unchanged"
        validation = self.validations.get(view)
        return validation.status if validation else "not run"


def gated_push(
    pusher: Any,
    select: Iterable[str] = (),
    *,
    skip_validation: bool = False,
    fail_fast: bool = False,
    now: datetime | str | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    validation_progress: Progress = silent,
    **push_options: Any,
) -> GatedPush:
    """Validate the selected online views, then push only those that pass.

    A failing view is not pushed at all (its rows are never read for Redis, its watermark
    does not move); the others still are, unless fail_fast, which pushes nothing. The
    gate checks the table as it is when validated: a dbt run between the two steps is not
    covered, as with any check-then-act.

    On an incremental push, a view with nothing new since its last push (Pusher.unchanged)
    is neither validated nor read again: its rows online passed the gate when they were
    pushed; only the push's time is recorded. That is what makes a push every minute cheap
    when little changes; its status is 'unchanged'. A full refresh or a dry run validates
    (and reads) every view.
    """
    views = [v.name for v in pusher.views(select)]  # checks the selection (unknown, not online)
    if not views:
        raise NotFoundError("no online feature views to push")
    if not push_options.get("dry_run"):
        pusher.check_reachable()  # an unreachable Redis fails before the suites run, not after
    if skip_validation:
        return GatedPush(True, {}, pusher.push(views, **push_options), [])
    incremental = not push_options.get("full_refresh") and not push_options.get("dry_run")
    unchanged = pusher.unchanged(views) if incremental else []
    to_validate = [name for name in views if name not in unchanged]
    validations = {}
    if to_validate:
        results = validate(pusher.project, to_validate, now=now, max_rows=max_rows, progress=validation_progress)
        validations = {v.feature_view: v for v in results}
    failed = [name for name in to_validate if not validations[name].success]
    if failed and fail_fast:
        return GatedPush(False, validations, [], views, stopped=True, unchanged=unchanged)
    passing = [name for name in views if name not in failed]
    pushed = pusher.push(passing, unchanged=unchanged, **push_options) if passing else []
    return GatedPush(False, validations, pushed, failed, unchanged=unchanged)
