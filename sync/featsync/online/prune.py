"""featsync prune: delete the online keys of view ids the registry no longer uses.

A view id covers (prefix, view, version, column layout), so a new version, or columns
changed without one, write new keys and leave the old ones in place: readers still on the
old registry keep reading what they understand, and a rollback finds its keys. Keys with a
ttl expire on their own; the others stay until pruned. Prune finds every state hash
``fs:<view id>`` whose ``identity`` names this key prefix and whose id no online view of
the registry has now, and deletes its keys, then the hash (so an interrupted prune can
be re-run). Ids of other prefixes or projects are never touched, and neither is a key that
merely starts with an id (``fs:<view id>BACKUP``): an id's data keys are ``fs:<view id>:...``
and nothing else.

A key of a state hash's shape that is not a hash (something else wrote it: WRONGTYPE) names
no owner, so prune cannot tell whose it is: it is reported through `unreadable` (the CLI
prints a warning naming the key and what to do) and left alone, and the other ids are
pruned as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis

from featsync.errors import FeatsyncError
from featsync.online.layout import KEY_PREFIX, VIEW_ID_CHARS
from featsync.online.state import IDENTITY, LAYOUT, layout_of, wrong_type
from featsync.registry import Registry

SCAN_COUNT = 10_000
DELETE_BATCH = 1_000


@dataclass
class Orphan:
    """A view id this prefix owns that no current online view uses."""

    view_id: str
    identity: str  # prefix/view/vN
    layout: str | None  # entities;feature:kind,... (None: written before featsync stored it)
    keys: int = 0  # data keys deleted (or, in a dry run, found)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def prune(
    registry: Registry,
    client: Any,
    key_prefix: str | None = None,
    dry_run: bool = False,
    unreadable: Callable[[str], None] = lambda message: None,
) -> list[Orphan]:
    """Delete (or with dry_run only count) the keys of this prefix's unused view ids.

    A state key that is not a hash is passed to `unreadable` as a message naming it, and skipped.

    Two SCANs of the keyspace (about a second per million keys each): one finds the state
    hashes, one deletes the orphans' keys as it goes, in batches, so memory stays flat.

    Redis unreachable, refusing the credentials or failing midway is a FeatsyncError (one line,
    exit code 1, as status and verify report it), never a traceback: the state hashes are
    deleted last, so a re-run finishes what an interrupted prune began.
    """
    try:
        return _prune(registry, client, key_prefix, dry_run, unreadable)
    except redis.RedisError as exc:
        raise FeatsyncError(f"cannot prune the online store: Redis failed: {exc}") from exc


def _prune(
    registry: Registry, client: Any, key_prefix: str | None, dry_run: bool, unreadable: Callable[[str], None]
) -> list[Orphan]:
    prefix = key_prefix or registry.project_name
    current = {layout_of(registry, view, key_prefix).view_id for view in registry.online_views()}
    width = len(KEY_PREFIX) + 1 + VIEW_ID_CHARS  # a state hash: "fs:" + the id
    orphans: dict[bytes, Orphan] = {}
    for key in _scan(client):
        if len(key) != width:
            continue
        view_id = key[len(KEY_PREFIX) + 1 :].decode(errors="replace")
        if view_id in current:
            continue
        try:
            identity, layout = client.hmget(key, IDENTITY, LAYOUT)
        except redis.ResponseError as exc:
            if not wrong_type(exc):
                raise
            unreadable(not_a_hash(key.decode(errors="replace")))
            continue
        if identity is None:
            continue
        identity = identity.decode(errors="replace")
        if identity.rsplit("/", 2)[0] != prefix:
            continue
        orphans[key] = Orphan(view_id, identity, layout.decode(errors="replace") if layout else None)
    if not orphans:
        return []
    batch: list[bytes] = []
    for key in _scan(client):
        if key[width : width + 1] != b":":  # the state hash itself (deleted last), or not a data key of an id
            continue
        owner = orphans.get(key[:width])
        if owner is None:
            continue
        owner.keys += 1
        if not dry_run:
            batch.append(key)
            if len(batch) >= DELETE_BATCH:
                _unlink(client, batch)
                batch = []
    if not dry_run:
        _unlink(client, batch + list(orphans))  # the state hashes last
    return sorted(orphans.values(), key=lambda o: o.identity)


def not_a_hash(key: str) -> str:
    """What prune reports of a key shaped like a state hash that is of another type."""
    return (
        f"key {key} has the shape of a featsync push state but is not a hash: something other than featsync "
        "wrote it, so prune cannot tell which view id it belongs to and left it (and any keys under it) alone. "
        f"Unless something else needs it, delete it (redis-cli DEL {key}): a view that still uses that id "
        "records its state again at its next push, and the next prune then knows whose it is"
    )


def _scan(client: Any) -> Iterator[bytes]:
    yield from client.scan_iter(match=f"{KEY_PREFIX}:*", count=SCAN_COUNT)


def _unlink(client: Any, keys: list[bytes]) -> None:
    """One UNLINK per key in a pipeline: a Redis Cluster refuses multi-key commands across slots."""
    if not keys:
        return
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    pipe.execute()
