"""The periodic events: metrics per shape, capacity offers, and scale requests for shapes
below their minimum or a host under memory pressure.

Only deployments someone listens to are looked at: those with a `governor_webhook_url`
or a client on the events stream that may see them. One LXD listing (with state) per
project and one `/1.0/resources` per pass (and one per member of an idle pet), whatever
the number of shapes.

- metrics (every `events.metrics_interval`): one `metrics` event per deployment;
- capacity (every `events.capacity_interval`): a `capacity-offer` per deployment when
  what fits changed since the last offer (with `pets`, while some are idle: per pet its
  members, until when it takes instances, and how many more of each opted-in shape fit
  there); a `scale-request` (`below-minimum`) for a shape below its minimum not yet
  asked at that count; under memory pressure a `scale-request` (`capacity-pressure`)
  per shape that can shrink, once per wanted count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..background import BackgroundLoop
from ..config import EventSettings
from ..errors import LXDUnavailable
from ..models import InstanceTemplate
from ..store import instances as records
from ..store import repository as repo
from ..store.rows import DeploymentRow, ShapeRow
from . import capacity as cap
from . import events as ev
from . import pets
from .context import Core
from .event_bus import EventBus
from .metrics import CpuSamples, shape_metrics
from .reconcile import owner_keys
from .scale_requests import (
    CAUSE_BELOW_MINIMUM,
    CAUSE_CAPACITY_PRESSURE,
    Debounce,
    below_minimum,
    below_minimum_reason,
    scale_request,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watched:
    """A deployment someone listens to, with its shapes and their instance records."""

    deployment: DeploymentRow
    shapes: list[ShapeRow]
    names: dict[int, list[str]]  # shape id -> recorded instance names
    current: dict[int, int]  # shape id -> instances not on their way out


class Monitor:
    def __init__(self, core: Core, bus: EventBus, settings: EventSettings,
                 below_minimum_debounce: Debounce, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.bus = bus
        self.settings = settings
        self.below = below_minimum_debounce
        self.pressure = Debounce()
        self.samples = CpuSamples()
        self._clock = clock
        self._offers: dict[int, dict[str, Any]] = {}
        self._pet_hosts: dict[str, cap.Host] = {}
        self._loop_thread = BackgroundLoop("event-monitor")

    # --- what is looked at ---------------------------------------------------------------

    def watched(self) -> list[Watched]:
        with self.core.db.read() as conn:
            rows = [d for d in repo.list_deployments(conn, None)
                    if (d.governor_webhook_url or self.bus.watched(d.id))
                    and (self.core.projects is None or d.project in self.core.projects)]
            shapes = repo.list_shapes(conn, [d.id for d in rows])
            shape_ids = [s.id for group in shapes.values() for s in group]
            names: dict[int, list[str]] = defaultdict(list)
            current: dict[int, int] = defaultdict(int)
            for record in records.list_all(conn, shape_ids=shape_ids) if shape_ids else []:
                names[record.shape_id].append(record.instance_name)
                if record.status != records.DELETING:
                    current[record.shape_id] += 1
        return [Watched(d, shapes.get(d.id, []), names, current) for d in rows]

    def _listings(self, projects: set[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Our instances per project, by name, as LXD's objects with state."""
        listings = {}
        for project in sorted(projects):
            listings[project] = {i["name"]: i for i in
                                 self.core.lxd.list_instances(project, with_state=True)
                                 if i.get("name") and owner_keys(self.core, i) is not None}
        return listings

    # --- metrics -------------------------------------------------------------------------

    def metrics_pass(self) -> int:
        """One `metrics` event per watched deployment; returns how many were published."""
        watched = self.watched()
        if not watched:
            self.samples.forget_except(())
            return 0
        listings = self._listings({w.deployment.project for w in watched})
        now = self._clock()
        published = 0
        seen = []
        for w in watched:
            project = w.deployment.project
            found = listings.get(project, {})
            shapes = {}
            for shape in w.shapes:
                names = w.names.get(shape.id, [])
                seen.extend((project, n) for n in names)
                shapes[shape.name] = {
                    **shape_metrics(project, names, found, self.samples, now),
                    "minimum": shape.scaling_minimum, "maximum": shape.scaling_maximum}
            if self.bus.publish(w.deployment.id, ev.Metrics(
                    interval=self.settings.metrics_interval, shapes=shapes)):
                published += 1
        self.samples.forget_except(seen)
        return published

    # --- capacity ------------------------------------------------------------------------

    def _template_config(self, project: str, shape: ShapeRow,
                         profiles: dict[tuple[str, str], dict[str, str]]) -> dict[str, str]:
        """The config an instance of the shape would get: its profiles', then its own."""
        template = InstanceTemplate.model_validate_json(shape.instance_template)
        config: dict[str, str] = {}
        for name in template.profiles if template.profiles is not None else ["default"]:
            key = (project, name)
            if key not in profiles:
                profile = self.core.lxd.get_profile(project, name)
                profiles[key] = dict(profile.config) if profile is not None else {}
            config.update(profiles[key])
        config.update(template.config)
        return config

    def capacity_pass(self) -> int:
        """Offers, below-minimum and pressure requests; returns how many were published."""
        watched = self.watched()
        if not watched:
            return 0
        published = 0
        # Below the minimum: from the store alone, so LXD trouble does not hold it back.
        for w in watched:
            for shape in w.shapes:
                current = w.current.get(shape.id, 0)
                if below_minimum(self.below, shape, current):
                    published += self._scale_request(
                        w, shape, shape.scaling_minimum, current, CAUSE_BELOW_MINIMUM,
                        below_minimum_reason(shape, current))
        host = cap.host_of(self.core.lxd.get_resources())
        listings = self._listings({w.deployment.project for w in watched})
        allocated = cap.allocated_cpu(i for found in listings.values() for i in found.values())
        profiles: dict[tuple[str, str], dict[str, str]] = {}
        lendable = pets.lendable(self.core)
        self._pet_hosts = {m: cap.host_of(self.core.lxd.get_resources(target=m))
                           for pet in lendable for m in pet.members}
        usages = []
        for w in watched:
            project = w.deployment.project
            found = listings.get(project, {})
            offers = {}
            for shape in w.shapes:
                offers[shape.name] = cap.offer(
                    host, self._template_config(project, shape, profiles),
                    current=w.current.get(shape.id, 0), maximum=shape.scaling_maximum,
                    cpu_allocated=allocated,
                    cpu_allocation_ratio=self.settings.cpu_allocation_ratio)
                states = [found[n] for n in w.names.get(shape.id, []) if n in found]
                usages.append(cap.ShapeUsage(
                    key=(w.deployment.id, shape.id), current=w.current.get(shape.id, 0),
                    minimum=shape.scaling_minimum,
                    running=sum(1 for i in states if i.get("status") == "Running"),
                    memory_usage=sum(int(((i.get("state") or {}).get("memory") or {})
                                         .get("usage") or 0) for i in states)))
            counts: dict[str, Any] = {name: o["count"] for name, o in offers.items()}
            pet_offers = None
            if lendable:
                pet_offers = self._pet_offers(w, lendable, listings, profiles)
                counts["pets"] = {name: {s: o["count"] for s, o in p["shapes"].items()}
                                  for name, p in pet_offers.items()}
            if offers and self._offers.get(w.deployment.id) != counts and self.bus.publish(
                    w.deployment.id, ev.CapacityOffer(shapes=offers, host=host.to_api(),
                                                      pets=pet_offers)):
                published += 1
                self._offers[w.deployment.id] = counts
        wanted = cap.pressure_counts(host, self.settings.memory_pressure_percent, usages)
        for key in self.pressure.sent():
            if key not in wanted:
                self.pressure.clear(key)
        by_key = {(w.deployment.id, s.id): (w, s) for w in watched for s in w.shapes}
        for key, count in sorted(wanted.items()):
            w, shape = by_key[key]
            current = w.current.get(shape.id, 0)
            if not self.pressure.should_send(key, (count, current)):
                continue
            published += self._scale_request(
                w, shape, count, current, CAUSE_CAPACITY_PRESSURE,
                f"host memory is {host.memory_percent:.0f}% used (threshold "
                f"{self.settings.memory_pressure_percent:g}%)")
        return published

    def _pet_offers(self, w: Watched, lendable: list[pets.Lendable],
                    listings: dict[str, dict[str, dict[str, Any]]],
                    profiles: dict[tuple[str, str], dict[str, str]]) -> dict[str, Any]:
        """Per idle pet: its members, until when it takes instances, and how many more
        of each opted-in shape fit on its members (each member's own resources and the
        running instances there; the shape's maximum bounds the sum)."""
        everywhere = [i for found in listings.values() for i in found.values()]
        project = w.deployment.project
        result = {}
        for pet in lendable:
            shapes = {}
            for shape in w.shapes:
                template = InstanceTemplate.model_validate_json(shape.instance_template)
                if not pet.takes(shape.config, template.type):
                    continue
                config = self._template_config(project, shape, profiles)
                current = w.current.get(shape.id, 0)
                count, limited_by = 0, "scaling_maximum"
                for member in pet.members:
                    here = cap.offer(
                        self._pet_hosts[member], config, current=current,
                        maximum=shape.scaling_maximum,
                        cpu_allocated=cap.allocated_cpu(
                            i for i in everywhere if i.get("location") == member),
                        cpu_allocation_ratio=self.settings.cpu_allocation_ratio)
                    count += here["count"]
                    limited_by = here["limited_by"] if here["limited_by"] != \
                        "scaling_maximum" else limited_by
                room = max(shape.scaling_maximum - current, 0)
                if count >= room:
                    count, limited_by = room, "scaling_maximum"
                shapes[shape.name] = {"count": count, "limited_by": limited_by}
            result[pet.pet.name] = {**pet.to_api(), "shapes": shapes}
        return result

    def _scale_request(self, w: Watched, shape: ShapeRow, count: int, current: int,
                       cause: str, reason: str) -> int:
        event = self.bus.publish(w.deployment.id, scale_request(
            w.deployment.project, w.deployment.name, shape, count=count, current=current,
            cause=cause, reason=reason))
        return 1 if event is not None else 0

    # --- thread --------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.metrics_interval or self.settings.capacity_interval:
            self._loop_thread.start(self._loop)

    def stop(self, timeout: float = 10.0) -> None:
        self._loop_thread.stop(timeout)

    def _run(self, name: str, work: Callable[[], int]) -> None:
        try:
            work()
        except LXDUnavailable as err:
            logger.warning("%s skipped: %s", name, err)
        except Exception:
            logger.exception("%s failed", name)

    def _loop(self, stopping: threading.Event) -> None:
        tasks = [(name, interval, work) for name, interval, work in (
            ("metrics", self.settings.metrics_interval, self.metrics_pass),
            ("capacity check", self.settings.capacity_interval, self.capacity_pass))
            if interval > 0]
        due = {name: self._clock() for name, _, _ in tasks}
        while not stopping.is_set():
            now = self._clock()
            for name, interval, work in tasks:
                if due[name] <= now:
                    self._run(name, work)
                    due[name] = max(due[name] + interval, self._clock())
            wait = min(due.values()) - self._clock()
            if wait > 0:
                stopping.wait(wait)
