"""The `webhooks:` section of the daemon's configuration file (`events:` is in
`config.py`: the core's)."""

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
