"""The pets' duty: tell governors before a pet is needed, and take it back at the deadline.

At `busy start - lead_time` (the notice) every shape with borrowed instances on the pet
gets a `scale-request` (cause `pet-reclaim`) listing them and the deadline; from then on
placement leaves the pet out. At the deadline (the busy start) the platform takes back
what is still borrowed: for a shape that would drop below its minimum it first launches
replacements on regular members (through the one reservation path: bulk best effort,
within the maximum), then stops each borrowed instance (the pet's `grace_period` as the
stop timeout; forced after it) and deletes it. What could not be replaced leaves the
shape below its minimum, and a `below-minimum` scale request says why: the pet wins.

The state (`notice_for`, `reclaimed_for`: the busy start each was done for) is in the
store, so a restart in a notice does not send it twice, and one in a reclaim runs the
reclaim again from what the records show (replacements already reserved count as
regular instances, so none is launched twice). Time is `core.clock`; the check interval
is the monotonic clock's.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict

from ..background import BackgroundLoop
from ..errors import LXDUnavailable
from ..store import pets as store
from ..store import repository as repo
from ..store.rows import PetRow
from . import bulk, instances, pets
from .clock import iso
from .context import Core
from .events import ScaleRequest
from .pets import BUSY, IDLE, Borrowed, PetState
from .scale_requests import CAUSE_BELOW_MINIMUM, current_count, scale_request

logger = logging.getLogger(__name__)

CAUSE_PET_RECLAIM = "pet-reclaim"
# How long the duty waits for replacement launches before it takes the pet back anyway.
REPLACEMENT_TIMEOUT = 600.0


def _by_shape(borrowed: list[Borrowed]) -> dict[tuple[int, str], list[Borrowed]]:
    grouped: dict[tuple[int, str], list[Borrowed]] = defaultdict(list)
    for b in borrowed:
        grouped[(b.deployment_id, b.shape)].append(b)
    return grouped


class PetDuty:
    def __init__(self, core: Core, *, interval: float = 10.0) -> None:
        self.core = core
        self.interval = interval
        self._loop_thread = BackgroundLoop("pet-duty")

    # --- one pass --------------------------------------------------------------------

    def tick(self) -> int:
        """Look at every pet once; returns the number of notices and reclaims done."""
        now = self.core.clock.now()
        cluster = self.core.lxd.cluster_members()
        with self.core.db.read() as conn:
            rows = store.list_pets(conn)
        done = 0
        for pet in rows:
            state = pets.state_at(pet, now)
            if state.state == IDLE or state.window is None:
                upcoming = iso(state.window[0]) if state.window else ""
                stale = {k: "" for k, v in (("notice_for", pet.notice_for),
                                            ("reclaimed_for", pet.reclaimed_for))
                         if v and v != upcoming}
                if stale:
                    with self.core.db.write() as conn:
                        store.set_state(conn, pet.id, **stale)
                continue
            start = iso(state.window[0])
            members = pets.members_of(pet, cluster)
            if pet.notice_for != start:
                self.notice(pet, members, state)
                with self.core.db.write() as conn:
                    store.set_state(conn, pet.id, notice_for=start)
                done += 1
            if state.state == BUSY and pet.reclaimed_for != start:
                if self.reclaim(pet, members, state):
                    with self.core.db.write() as conn:
                        store.set_state(conn, pet.id, reclaimed_for=start)
                done += 1
        return done

    def _publish(self, deployment_id: int, payload: ScaleRequest) -> None:
        if self.core.events is None:
            return
        try:
            self.core.events.publish(deployment_id, payload)
        except Exception:
            logger.exception("cannot publish a scale request for deployment %d", deployment_id)

    def notice(self, pet: PetRow, members: list[str], state: PetState) -> None:
        """A `pet-reclaim` scale request per shape with instances borrowed from the pet."""
        assert state.deadline is not None
        deadline = iso(state.deadline)
        with self.core.db.read() as conn:
            borrowed = pets.borrowed_on(conn, members)
            shapes = []
            for (deployment_id, shape_name), items in sorted(_by_shape(borrowed).items()):
                d = repo.get_deployment(conn, items[0].project, items[0].deployment)
                shape = repo.get_shape(conn, deployment_id, shape_name)
                if d is None or shape is None:
                    continue
                shapes.append((d, shape, items, current_count(conn, shape.id)))
        for d, shape, items, current in shapes:
            names = [b.record.instance_name for b in items]
            logger.info("pet %s is needed at %s: asking deployment %s to move %d instance(s) "
                        "of shape %s off it", pet.name, deadline, d.name, len(names), shape.name)
            self._publish(d.id, scale_request(
                d.project, d.name, shape, count=current, current=current,
                cause=CAUSE_PET_RECLAIM,
                reason=f'pet "{pet.name}" is needed from {deadline}: its borrowed '
                       f"instances are stopped and deleted then",
                pet=pet.name, members=members, deadline=deadline, instances=names,
                instance_urls=[b.to_api()["url"] for b in items]))

    def reclaim(self, pet: PetRow, members: list[str], state: PetState) -> bool:
        """Take the pet back; True when nothing is borrowed from it any more."""
        with self.core.db.read() as conn:
            borrowed = pets.borrowed_on(conn, members)
        for (_deployment_id, shape_name), items in sorted(_by_shape(borrowed).items()):
            try:
                self._reclaim_shape(pet, items)
            except Exception:
                logger.exception("reclaiming pet %s from shape %s failed; tried again",
                                 pet.name, shape_name)
        with self.core.db.read() as conn:
            return not pets.borrowed_on(conn, members)

    def _reclaim_shape(self, pet: PetRow, items: list[Borrowed]) -> None:
        first = items[0]
        target = instances.resolve(self.core, first.project, first.deployment, first.shape)
        with self.core.db.read() as conn:
            shape = repo.get_shape(conn, target.deployment.id, first.shape)
            assert shape is not None
            current = current_count(conn, shape.id)
        regular = current - len(items)
        needed = max(shape.scaling_minimum - regular, 0)
        room = max(shape.scaling_maximum - current, 0)
        launched = 0
        if needed and room:
            try:
                op = bulk.launch_many(self.core, target, count=min(needed, room),
                                      best_effort=True)
                self.core.operations.wait(op.id, REPLACEMENT_TIMEOUT)
                launched = min(needed, room)
                logger.info("pet %s: %d replacement(s) of shape %s launched on regular "
                            "members", pet.name, launched, shape.name)
            except Exception as err:
                logger.warning("pet %s: no replacement for shape %s: %s", pet.name,
                               shape.name, err)
        for b in items:
            if b.record.status == "pending":
                continue  # a launch in flight on the pet: taken at the next pass
            self._stop(pet, b)
            try:
                instances.delete_recorded_instances(self.core, [b.record])
            except Exception:
                logger.exception("pet %s: cannot delete borrowed instance %s; tried again",
                                 pet.name, b.record.instance_name)
                continue
            logger.info("pet %s: borrowed instance %s deleted", pet.name,
                        b.record.instance_name)
        with self.core.db.read() as conn:
            after = current_count(conn, shape.id)
        if after < shape.scaling_minimum:
            self._publish(target.deployment.id, scale_request(
                target.project, target.deployment.name, shape,
                count=shape.scaling_minimum, current=after, cause=CAUSE_BELOW_MINIMUM,
                reason=f'pet "{pet.name}" was taken back: shape "{shape.name}" has '
                       f"{after} instance(s), below its scaling_minimum "
                       f"({shape.scaling_minimum}); "
                       + ("no room for replacements" if not room else
                          "not every replacement could be placed"),
                pet=pet.name))

    def _stop(self, pet: PetRow, b: Borrowed) -> None:
        """Stop the instance cleanly within the grace period (the delete forces what is
        still running after it)."""
        project, name = b.project, b.record.instance_name
        try:
            with self.core.instance_locks.hold(project, name), \
                    self.core.state_actions.running(project, name, "stop"):
                if pet.grace_period:
                    self.core.lxd.change_state(project, name, "stop",
                                               timeout=pet.grace_period)
                else:
                    self.core.lxd.change_state(project, name, "stop", force=True)
            logger.info("pet %s: borrowed instance %s stopped", pet.name, name)
        except Exception as err:
            logger.info("pet %s: borrowed instance %s did not stop within %d s (%s): the "
                        "delete forces it", pet.name, name, pet.grace_period, err)

    # --- thread ------------------------------------------------------------------------

    def start(self) -> None:
        if self.interval > 0:
            self._loop_thread.start(self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        self._loop_thread.stop(timeout)

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                self.tick()
            except LXDUnavailable as err:
                logger.warning("pet duty skipped: %s", err)
            except Exception:
                logger.exception("pet duty failed")
            stopping.wait(self.interval)
