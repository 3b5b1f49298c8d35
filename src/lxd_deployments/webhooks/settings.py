"""The `webhooks:` and `events:` sections of the daemon's configuration file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookSettings(_Frozen):
    """How deliveries to `governor_webhook_url` are made and retried."""

    # Attempts before a delivery is recorded as failed (the first one included).
    max_attempts: int = Field(default=8, ge=1, le=100)
    # Seconds before the first retry; each later retry waits twice as long, up to max.
    backoff_initial: float = Field(default=5.0, gt=0)
    backoff_max: float = Field(default=600.0, gt=0)
    # Up to this fraction of the delay is added at random, so retries spread out.
    backoff_jitter: float = Field(default=0.1, ge=0, le=1)
    # Seconds one HTTP attempt may take (connect, send, answer).
    timeout: float = Field(default=10.0, gt=0)
    # Deliveries in flight at once (threads).
    workers: int = Field(default=4, ge=1, le=64)
    # Seconds a finished (delivered or failed) delivery stays in the log.
    retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Seconds the previous secret still signs (a second signature) after a rotation.
    secret_grace: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> WebhookSettings:
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must not be less than backoff_initial")
        return self


class EventSettings(_Frozen):
    """The periodic events: metrics, capacity offers and scale requests."""

    # Seconds between metrics events per deployment; 0 turns them off.
    metrics_interval: float = Field(default=60.0, ge=0)
    # Seconds between capacity checks (offers, pressure, shapes below their minimum);
    # 0 turns them off.
    capacity_interval: float = Field(default=300.0, ge=0)
    # Host memory in use, in percent of the total, at which shapes are asked to shrink.
    memory_pressure_percent: float = Field(default=90.0, gt=0, le=100)
    # CPU threads that may be handed out per host thread (limits.cpu over threads).
    cpu_allocation_ratio: float = Field(default=1.0, gt=0)
    # Seconds between polls of the change log (outside changes become events).
    changes_poll_interval: float = Field(default=0.25, gt=0, le=60)
    # Seconds a change stays in the change log once it has become an event.
    changes_retention: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Events buffered per events-stream client; a client that falls further behind is
    # disconnected (as LXD drops slow event listeners).
    stream_buffer: int = Field(default=1024, ge=16)
