"""The background side of events for the daemon: the deliverer, the change follower,
the monitor and the pets' duty, started after the startup reconcile and stopped before
the store closes."""

from __future__ import annotations

import logging

from ..config import EventSettings
from ..core.change_events import ChangeFollower
from ..core.context import Core
from ..core.event_bus import EventBus
from ..core.monitor import Monitor
from ..core.pet_duty import PetDuty
from ..core.scale_requests import Debounce
from .deliverer import Deliverer
from .settings import WebhookSettings

logger = logging.getLogger(__name__)


def make_bus(db, webhooks: WebhookSettings, events: EventSettings) -> EventBus:
    return EventBus(db, max_attempts=webhooks.max_attempts, stream_buffer=events.stream_buffer,
                    secret_grace=webhooks.secret_grace)


class WebhookService:
    def __init__(self, core: Core, webhooks: WebhookSettings, events: EventSettings, *,
                 pet_interval: float = 0.0) -> None:
        if core.events is None:
            raise ValueError("the core has no event bus")
        self.core = core
        self.bus = core.events
        self.deliverer = Deliverer(core.db, webhooks)
        self.bus.on_queued(self.deliverer.kick)
        below_minimum = Debounce()
        self.follower = ChangeFollower(core, self.bus, below_minimum,
                                       poll_interval=events.changes_poll_interval,
                                       retention=events.changes_retention)
        self.monitor = Monitor(core, self.bus, events, below_minimum)
        # The pets' notices and reclaims (0: none), a duty of its own.
        self.pets = PetDuty(core, interval=pet_interval)

    def start(self) -> None:
        self.deliverer.start()
        self.follower.start()
        self.monitor.start()
        self.pets.start()
        logger.info("events and webhook deliveries started")

    def stop(self) -> None:
        self.pets.stop(timeout=5.0)
        self.monitor.stop(timeout=5.0)
        self.follower.stop(timeout=5.0)
        self.deliverer.stop(timeout=5.0)
