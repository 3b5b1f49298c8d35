"""The one reservation of launch slots, for single, bulk and scale launches.

A launch is decided in one write transaction, before LXD is asked anything: the locks
(`lock_for_reservation`: the shape, then its placement group), the bound (the
shape's count against its maximum), the placement (every shape of the group counted,
`placement.decide`), then a `pending` record per instance. Whatever refuses (the bound,
a strict placement rule) refuses the whole request before any record or operation
exists. The callers differ only in how many instances they ask for, which `Ask` says
after reading the bound in the transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from ..store import instances as records
from . import placement, placement_groups
from .context import Core
from .target import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """One reserved instance: its record, where it goes, and why that breaks the
    shape's placement rule ("" when it does not)."""

    name: str
    record_id: int
    location: str = ""
    violation: str = ""


@dataclass(frozen=True)
class Reservation:
    bound: records.Bound
    slots: list[Slot]
    group: str = ""  # the shape's placement group ("" when none)


# Given the write transaction and the bound read in it, the names to launch (raising
# `BoundReached` when the bound refuses; [] when there is nothing to launch).
Ask = Callable[[Connection, records.Bound], list[str]]


def reserve_launches(core: Core, target: Target, ask: Ask, *,
                     best_effort: bool = False) -> Reservation:
    """Reserve the slots `ask` wants, placed by the shape's rule: all of them, or (best
    effort) as many as the placement rule lets, at least one; else nothing (409)."""
    shape = target.shape
    members = placement.candidates(core, target.deployment.id, shape.name)
    unavailable = placement.unavailable(core)
    with core.db.write() as conn:
        scope = records.lock_for_reservation(conn, shape.id, shape.deployment_id)
        bound = records.bound(conn, shape.id, shape.name)
        names = ask(conn, bound)
        slots: list[Slot] = []
        if names:
            decision = placement.plan(conn, shape.id, scope, members, len(names),
                                      best_effort=best_effort, unavailable=unavailable)
            for name, location, violation in zip(names, decision.locations,
                                                 decision.violations, strict=False):
                slots.append(Slot(name, records.reserve(conn, shape.id, target.project, name,
                                                        location=location,
                                                        revision=bound.template_revision,
                                                        unit=core.unit_id),
                                  location, violation))
        violating = [slot for slot in slots if slot.violation]
        if violating and scope.group is not None:
            report = placement_groups.current_violations(conn, scope,
                                                             clustered=members is not None)
    group = scope.group.name if scope.group is not None else ""
    if violating and scope.group is not None:
        logger.warning("%d instance(s) of shape %s placed against %s: %s", len(violating),
                       shape.name, placement.rule_of(scope.group).describe(),
                       violating[0].violation)
        placement_groups.report_launch(core, target, scope.group, violating, report)
    return Reservation(bound, slots, group)
