"""The deliverer: worker threads that POST queued deliveries to governors.

Each worker claims the most overdue pending delivery (one write transaction), reads the
deployment's current `governor_webhook_url` and signing secrets in the same
transaction, sends one signed attempt with httpx, and records the outcome. A 2xx answer
is delivered; anything else (another status, a refused connection, a timeout) is retried
after `backoff_initial * 2**(attempt-1)` seconds, capped at `backoff_max`, plus jitter,
until `max_attempts` attempts were made; then the delivery is `failed`. The number of
workers bounds how many deliveries are in flight; the API's event loop is never used.

Logs name the deployment and the delivery id, never the secret or the URL (which may
carry a token).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .. import metrics_export as metrics
from ..store import Database
from ..store import webhook_deliveries as queue
from ..store import webhook_secrets as secret_store
from .settings import WebhookSettings
from .signing import signed_headers

logger = logging.getLogger(__name__)

# Longest idle wait between looks at the queue (kicks wake workers sooner).
IDLE_WAIT = 5.0
PRUNE_EVERY = 600.0
ERROR_BODY_CHARS = 200


def backoff_delay(attempts: int, settings: WebhookSettings,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `attempts` failed attempts (1 for the first retry)."""
    base = min(settings.backoff_max, settings.backoff_initial * 2 ** max(attempts - 1, 0))
    return base * (1 + settings.backoff_jitter * rand())


@dataclass(frozen=True)
class Attempt:
    """One claimed delivery with what it is sent with."""

    delivery: queue.DeliveryRow
    deployment: str
    url: str
    secrets: list[str]


class Deliverer:
    def __init__(self, db: Database, settings: WebhookSettings, *,
                 transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.db = db
        self.settings = settings
        self._transport = transport
        self._clock = clock
        self._rand = rand
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._kicks = 0
        self._threads: list[threading.Thread] = []
        self._last_prune = 0.0

    # --- one attempt, callable directly (unit tests) -----------------------------------

    def claim(self) -> Attempt | None:
        now = self._clock()
        with self.db.write() as conn:
            delivery = queue.claim_due(conn, now)
            if delivery is None:
                return None
            row = queue.deployment_of(conn, delivery.deployment_id)
            secret = secret_store.get_or_create(conn, delivery.deployment_id)
        return Attempt(delivery=delivery, deployment=row.name if row else "?",
                       url=row.governor_webhook_url if row else "",
                       secrets=secret.signing_secrets(now))

    def attempt(self, attempt: Attempt, client: httpx.Client) -> bool:
        """Send one attempt and record its outcome; True when delivered."""
        delivery = attempt.delivery
        if not attempt.url:
            self._failed(attempt, "the deployment has no governor_webhook_url any more",
                         None, final=True)
            return False
        headers = signed_headers(attempt.secrets, delivery_id=delivery.uuid,
                                 event_type=delivery.event_type, body=delivery.body,
                                 now=self._clock())
        started = time.monotonic()
        try:
            response = client.post(attempt.url, content=delivery.body, headers=headers)
        except httpx.HTTPError as err:
            self._failed(attempt, f"{type(err).__name__}: {err}" if str(err)
                         else type(err).__name__, None, started=started)
            return False
        if 200 <= response.status_code < 300:
            metrics.webhook_attempt(attempt.deployment, "delivered", time.monotonic() - started)
            with self.db.write() as conn:
                queue.mark_delivered(conn, delivery.id, status_code=response.status_code,
                                     url=attempt.url)
            logger.info("webhook delivery %s (%s) to deployment %s: delivered (attempt %d)",
                        delivery.uuid, delivery.event_type, attempt.deployment,
                        delivery.attempts)
            return True
        text = " ".join(response.text[:ERROR_BODY_CHARS].split())
        self._failed(attempt, f"HTTP {response.status_code}" + (f": {text}" if text else ""),
                     response.status_code, started=started)
        return False

    def _failed(self, attempt: Attempt, error: str, status_code: int | None, *,
                final: bool = False, started: float | None = None) -> None:
        delivery = attempt.delivery
        final = final or delivery.attempts >= delivery.max_attempts
        metrics.webhook_attempt(attempt.deployment, "failed" if final else "retry",
                                0.0 if started is None else time.monotonic() - started)
        retry_at = None if final else \
            self._clock() + backoff_delay(delivery.attempts, self.settings, self._rand)
        with self.db.write() as conn:
            queue.mark_attempt_failed(conn, delivery.id, error=error, status_code=status_code,
                                      url=attempt.url, retry_at=retry_at)
        if final:
            logger.warning("webhook delivery %s (%s) to deployment %s failed after %d "
                           "attempt(s): %s", delivery.uuid, delivery.event_type,
                           attempt.deployment, delivery.attempts, error)
        else:
            logger.info("webhook delivery %s (%s) to deployment %s: attempt %d failed (%s); "
                        "retrying in %.1fs", delivery.uuid, delivery.event_type,
                        attempt.deployment, delivery.attempts, error,
                        retry_at - self._clock())  # type: ignore[operator]

    def run_once(self, client: httpx.Client) -> bool:
        """Claim and attempt one due delivery; False when none was due."""
        attempt = self.claim()
        if attempt is None:
            return False
        try:
            self.attempt(attempt, client)
        except Exception as err:  # a bug: keep the delivery retrying, log the trace
            logger.exception("webhook delivery %s crashed", attempt.delivery.uuid)
            self._failed(attempt, f"Internal error: {type(err).__name__}", None)
        return True

    def client(self) -> httpx.Client:
        # trust_env=False: no proxy from the environment; redirects are not followed (a
        # signed body must reach the URL the admin gave, not another).
        return httpx.Client(transport=self._transport, timeout=self.settings.timeout,
                            trust_env=False, follow_redirects=False,
                            headers={"User-Agent": "lxd-deployments-webhooks"})

    # --- threads -----------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        with self.db.write() as conn:
            resumed = queue.reset_in_flight(conn, self._clock())
            waiting = queue.counts(conn).get(queue.PENDING, 0)
        if resumed or waiting:
            logger.info("webhook deliveries: %d pending (%d cut off by the last stop)",
                        waiting, resumed)
        self._stop.clear()
        for index in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"webhooks-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers; one still waiting on a slow receiver is left behind (a daemon
        thread): its delivery is `delivering` in the store, pending again at next start."""
        self._stop.set()
        self.kick()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._threads = []

    def kick(self) -> None:
        """New deliveries are queued: wake the workers."""
        with self._wake:
            self._kicks += 1
            self._wake.notify_all()

    def _idle_wait(self) -> float:
        with self.db.read() as conn:
            due = queue.next_due(conn)
        if due is None:
            return IDLE_WAIT
        return min(max(due - self._clock(), 0.0), IDLE_WAIT)

    def _prune(self) -> None:
        now = self._clock()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        with self.db.write() as conn:
            pruned = queue.prune(conn, now - self.settings.retention)
        if pruned:
            logger.info("webhook delivery log: %d finished deliveries pruned", pruned)

    def _work(self) -> None:
        with self.client() as client:
            while not self._stop.is_set():
                try:
                    if self.run_once(client):
                        continue
                    self._prune()
                    with self._wake:
                        kicks = self._kicks
                    wait = self._idle_wait()
                    with self._wake:
                        if self._kicks == kicks and not self._stop.is_set() and wait > 0:
                            self._wake.wait(wait)
                except Exception:
                    logger.exception("the webhook deliverer failed; going on")
                    self._stop.wait(1.0)
