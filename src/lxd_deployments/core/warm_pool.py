"""Warm pools: a few stopped instances of a shape made in advance, so that a launch
renames and starts one instead of creating it from the image.

A shape's `warm_pool.size` (0 to `lifecycle.MAX_WARM_POOL`) is how many the pool holds,
made from the shape's current template revision. They are not records of the shape:
they do not count in `scaling_current` nor against the bounds, and their keys
(`ownership.warm_body`) name the pool, not the shape, so reconcile and recovery never
take them for instances of the shape. A launch (single or batch) claims a ready one in
the store, on the cluster member its placement chose (any on a server that is not
clustered), renames it to the launch's name, rewrites its keys into the shape's, and
starts it; none there, or anything going wrong on the way, falls back to a cold create
(on that member). On a cluster the refiller spreads the pool over the members the
shape may use.
`WarmPools` refills the pools in the background (one instance at a time), recycles
instances of an older template revision, and deletes pool instances of ours that no row
knows (a crash in the middle, a shape deleted while its pool was being made).
"""

from __future__ import annotations

import logging
import secrets
import string
import threading
import time
from collections import Counter

from sqlalchemy import select

from ..background import BackgroundLoop
from ..errors import Conflict
from ..lxd import LXDAdapter
from ..store import instances as records
from ..store import presence
from ..store import repository as repo
from ..store import warm_pool as pool
from ..store.schema import units as units_table
from . import lifecycle, placement
from .context import Core
from .ownership import KEY_WARM_POOL, shape_keys, warm_body, warm_pool_of
from .target import Target

logger = logging.getLogger(__name__)

# Seconds between refills when nothing wakes the refiller, and between sweeps of
# LXD for pool instances no row knows.
TICK = 2.0
SWEEP_INTERVAL = 60.0
_ALPHABET = string.ascii_lowercase + string.digits


def _name(target: Target, taken: set[str]) -> str:
    prefix = f"{target.deployment.name}-{target.shape.name}"[:48].rstrip("-")
    while True:
        name = f"{prefix}-warm-{''.join(secrets.choice(_ALPHABET) for _ in range(6))}"
        if name not in taken:
            return name


def _discard(core: Core, project: str, name: str) -> None:
    """Delete a pool instance in LXD if it is one of ours (never anything else)."""
    instance = core.lxd.get_instance(project, name)
    if instance is not None and warm_pool_of(core, instance) is not None:
        core.lxd.delete_instance(project, name)


def take(core: Core, target: Target, name: str, location: str = "") -> bool:
    """Turn a ready pool instance of the shape's current revision into instance `name`
    (renamed, keys rewritten, not started yet), one on cluster member `location` when
    the placement chose one; False: none was there or it did not go, and the launch
    creates the instance itself (there)."""
    shape, project = target.shape, target.project
    with core.db.read() as conn:
        if not any(r.status == pool.READY and r.revision == shape.template_revision
                   and (not location or r.location == location)
                   for r in pool.of_shape(conn, shape.id)):
            return False
    with core.db.write() as conn:
        row = pool.claim(conn, shape.id, shape.template_revision, location)
    if row is None:
        return False
    current = row.instance_name
    try:
        core.lxd.rename_instance(project, row.instance_name, name)
        current = name
        core.lxd.update_instance_config(project, name, shape_keys(core, target),
                                        remove=[KEY_WARM_POOL])
    except Exception as err:
        logger.warning("cannot take warm instance %s for %s: %s; creating it instead",
                       row.instance_name, name, err)
        try:
            _discard(core, project, current)
        except Exception:
            logger.exception("cannot delete warm instance %s", current)
        with core.db.write() as conn:
            pool.remove(conn, row.id)
        core.warm_pool_wakeup.set()
        return False
    with core.db.write() as conn:
        pool.remove(conn, row.id)
    core.warm_pool_wakeup.set()
    logger.info("launch of %s took warm instance %s%s", name, row.instance_name,
                f" on {row.location}" if row.location else "")
    return True


def _target(conn, shape_id: int) -> Target | None:
    ref = records.shape_ref(conn, shape_id)
    if ref is None:
        return None
    d, s = repo.get_deployment_shape(conn, ref.project, ref.deployment_name, ref.shape_name)
    return None if d is None or s is None else Target(d, s)


def refill_shape(core: Core, shape_id: int) -> int:
    """Bring one shape's pool to its size at its current revision; what it changed.

    On a cluster the pool is spread over the members the shape's instances may go to
    (`placement.candidates`: its cluster group, online, pets lent), each new one on the
    member holding fewest, so that wherever a placement puts a launch a warm instance
    is likely there; one on a member the shape may no longer use is recycled (one on an
    offline member is left until it is back: LXD could not delete it)."""
    with core.db.read() as conn:
        target = _target(conn, shape_id)
        if target is None:
            return 0
        size = lifecycle.warm_pool_size(repo.shape_config(conn, shape_id))
        rows = pool.of_shape(conn, shape_id)
    if core.projects is not None and target.project not in core.projects:
        return 0
    members = _members(core, target)
    revision, project = target.shape.template_revision, target.project
    current = [r for r in rows if r.revision == revision and r.status in (pool.PENDING,
                                                                          pool.READY)]
    drop = [r for r in rows if r.status == pool.READY and r.revision != revision]
    if members is not None:
        offline = placement.unavailable(core)
        misplaced = [r for r in current if r.location not in members]
        drop += [r for r in misplaced if r.status == pool.READY and r.location not in offline]
        current = [r for r in current if r not in misplaced]
    surplus = len(current) - size
    if surplus > 0:
        drop += [r for r in reversed(current) if r.status == pool.READY][:surplus]
    changed = 0
    for row in drop:
        with core.db.write() as conn:
            if not _mark(conn, row):
                continue
        _discard(core, project, row.instance_name)
        with core.db.write() as conn:
            pool.remove(conn, row.id)
        changed += 1
    missing = size - len(current)
    if missing <= 0:
        return changed
    where = [""] * missing if members is None else placement.spread(
        members, Counter(r.location for r in current), missing) if members else []
    for location in where:
        with core.db.read() as conn:
            taken = records.names_in_project(conn, project) | pool.names_in_project(conn,
                                                                                    project)
        name = _name(target, taken | core.lxd.instance_names(project))
        with core.db.write() as conn:
            row_id = pool.add(conn, shape_id, project, name, revision, location)
        try:
            core.lxd.create_instance(project, warm_body(core, target, name),
                                     target=location or None)
        except Exception as err:
            logger.warning("cannot make warm instance %s of shape %s%s: %s", name,
                           target.shape.name, f" on {location}" if location else "", err)
            with core.db.write() as conn:
                pool.remove(conn, row_id)
            break  # try again at the next refill, not in a tight loop
        with core.db.write() as conn:
            pool.set_status(conn, row_id, pool.READY)
        changed += 1
    return changed


def _members(core: Core, target: Target) -> list[str] | None:
    """The members the shape's pool is spread over; None when LXD is not clustered, []
    when none may hold its instances now (none of its cluster group is online): then
    the pool waits, as launches would be refused."""
    try:
        return placement.candidates(core, target.deployment.id, target.shape.name)
    except Conflict as err:
        logger.debug("warm pool of shape %s waits: %s", target.shape.name, err)
        return []


def _mark(conn, row) -> bool:
    current = [r for r in pool.of_shape(conn, row.shape_id) if r.id == row.id]
    if not current or current[0].status != pool.READY:
        return False
    pool.set_status(conn, row.id, pool.DELETING)
    return True


def refill(core: Core) -> int:
    with core.db.read() as conn:
        shape_ids = pool.shapes_with_pools(conn, lifecycle.WARM_POOL_SIZE_KEY)
    changed = 0
    for shape_id in sorted(shape_ids):
        try:
            changed += refill_shape(core, shape_id)
        except Exception:
            logger.exception("refilling the warm pool of shape %d failed", shape_id)
    return changed


def drain(core: Core, shape_ids: list[int]) -> None:
    """Delete the pools of shapes about to be deleted."""
    with core.db.read() as conn:
        rows = [r for shape_id in shape_ids for r in pool.of_shape(conn, shape_id)]
    for row in rows:
        _discard(core, row.project, row.instance_name)
        with core.db.write() as conn:
            pool.remove(conn, row.id)


def _others_alive(core: Core) -> bool:
    """Whether another process of the service is alive on the store (it may be taking a
    pool instance for a launch right now)."""
    with core.db.read() as conn:
        units = set(conn.execute(select(units_table.c.unit_id)).scalars()) - {core.unit_id}
    return bool(presence.alive(core.db, units))


def recover(core: Core) -> None:
    """When the refiller starts (in the leader): rows a crash left in the middle go,
    with their instance if it is still a pool instance of ours. Being made or deleted is
    only ever the refiller's (the previous leader's, gone); being taken is any launch's,
    so those go only when no other process of the service is alive."""
    statuses = [pool.PENDING, pool.DELETING]
    if not _others_alive(core):
        statuses.append(pool.TAKEN)
    with core.db.read() as conn:
        rows = pool.all_rows(conn, tuple(statuses))
    for row in rows:
        try:
            _discard(core, row.project, row.instance_name)
        except Exception:
            logger.exception("cannot delete warm instance %s", row.instance_name)
            continue
        with core.db.write() as conn:
            pool.remove(conn, row.id)


def sweep(core: Core, lxd: LXDAdapter | None = None) -> int:
    """Delete pool instances of ours that neither a pool row nor a record names."""
    lxd = lxd or core.lxd
    deleted = 0
    with core.db.read() as conn:
        projects = records.projects_with_deployments(conn)
    for project in projects:
        if core.projects is not None and project not in core.projects:
            continue
        listing = lxd.list_instances(project)
        with core.db.read() as conn:
            known = pool.names_in_project(conn, project) | records.names_in_project(conn,
                                                                                   project)
        for instance in listing:
            name = instance.get("name", "")
            if name and name not in known and warm_pool_of(core, instance) is not None:
                logger.info("deleting warm instance %s: no pool holds it", name)
                lxd.delete_instance(project, name)
                deleted += 1
    return deleted


class WarmPools:
    """The refiller thread: refills on a tick or when a launch took an instance
    (`core.warm_pool_wakeup`, which also wakes it to stop)."""

    def __init__(self, core: Core, *, tick: float = TICK, recover_at_start: bool = True) -> None:
        self.core = core
        self.tick = tick
        # Off in a process started while other processes of the service may be taking
        # pool instances (a restarted worker): their `taken` rows are no crash's.
        self.recover_at_start = recover_at_start
        self._thread = BackgroundLoop("warm-pools", wake=core.warm_pool_wakeup.set)

    def start(self) -> None:
        self._thread.start(self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        self._thread.stop(timeout)

    def _loop(self, stopping: threading.Event) -> None:
        swept = 0.0
        while not stopping.is_set():
            try:
                if time.monotonic() - swept > SWEEP_INTERVAL:
                    if swept == 0.0 and self.recover_at_start:
                        recover(self.core)
                    sweep(self.core)
                    swept = time.monotonic()
                refill(self.core)
            except Exception:
                logger.exception("the warm pools' refill failed; trying again")
            self.core.warm_pool_wakeup.wait(self.tick)
            self.core.warm_pool_wakeup.clear()
