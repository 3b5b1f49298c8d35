"""The daemon: read the config, open the store, serve the API on its sockets, and bring
LXD in as soon as it answers.

The service starts whether or not LXD answers. With LXD there (the common case) the
startup reconcile runs before the first request is served, as it always did. Without,
the sockets are served at once, and until LXD answered and the startup reconcile ran,
work on instances answers 503 (in LXD's envelope) while everything that only needs the
store works. `bring_up_lxd` retries with
a backoff (`LXD_RETRY_MIN` doubling to `LXD_RETRY_MAX` seconds), logs what is wrong in
words, then runs the startup reconcile and starts the background duties (the watcher of
LXD's events and periodic reconciles, webhooks and their monitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import grp
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api import create_app
from .auth.caller import Listener
from .auth.identify import Authenticators
from .auth.jwt import JWTAuthenticator
from .config import ConfigError, Settings, load_settings
from .core import Core
from .core.clock import FileClock, SystemClock
from .core.duties import Leadership
from .core.generations import GenerationFollower
from .core.hook_timer import HookTimer
from .core.operations import Operations
from .core.readiness import LXDReadiness
from .core.warm_pool import WarmPools
from .core.watcher import Watcher
from .errors import LXDUnavailable
from .lxd.pylxd_adapter import PylxdAdapter, describe, open_client
from .net.limits import plan_connections, raise_fd_limit
from .process_role import BoundSockets, Role
from .servers import Listening, bind_tcp_socket, make_server, prepare_tls, run_servers
from .statedir import UMASK, create_private, secure_state_dir
from .store import open_database
from .webhooks.service import WebhookService, make_bus

logger = logging.getLogger("lxd_deployments")

# Seconds between attempts to reach LXD at start: doubling from the first to the last.
LXD_RETRY_MIN = 0.5
LXD_RETRY_MAX = 10.0
# Seconds a thread holds the GIL before another waiting for it gets it (Python's is 0.005).
SWITCH_INTERVAL = 0.001
# The response header naming the worker process that served a request.
WORKER_HEADER = b"x-lxd-deployments-worker"
# Seconds between two log lines saying LXD is still not there.
LXD_WAIT_LOG_INTERVAL = 60.0


def bind_unix_socket(settings: Settings) -> socket.socket:
    """Bind the admin socket ourselves so its mode and group are set before anyone connects."""
    return _bind_unix(settings.socket_path, int(settings.unix_socket_mode, 8),
                      settings.unix_socket_group)


def bind_instance_socket(settings: Settings) -> socket.socket:
    """The in-instance socket: root's, mode 0660 (LXD's proxy devices connect as root)."""
    return _bind_unix(settings.instance_socket_path, 0o660, None)


def _bind_unix(path: Path, mode: int, group: str | None) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: no one listens
        else:
            raise ConfigError(f"another service already listens on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {path}: {err.strerror or err}") from err
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    if group:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    sock.listen(1024)
    return sock


def service_id(settings: Settings) -> str:
    """This service's identity, written on its instances; kept apart from the database so
    that a lost database can be rebuilt from LXD by the same service. `service_id` in
    the settings (the application's, shared by its units) wins over the kept one."""
    if settings.service_id is not None:
        return settings.service_id
    path = settings.service_id_path
    if path.exists():
        return path.read_text().strip()
    value = str(uuid.uuid4())
    path.write_text(value + "\n")
    return value


def secure_state(settings: Settings) -> None:
    secure_state_dir(settings.state_dir, socket_group=settings.unix_socket_group,
                     socket_path=settings.socket_path)


def build_core(settings: Settings) -> Core:
    """The core, with an LXD adapter not connected yet (`bring_up_lxd` connects it)."""
    secure_state(settings)  # before the store opens: its secrets are never exposed
    if settings.database is None:
        create_private(settings.database_path)  # SQLite: made 0600 before it opens
    try:
        db = open_database(settings)
    except OperationalError as err:
        # The server's own words (never the password: it is in no URL or message).
        raise ConfigError(f"cannot open the store: {str(err.orig).strip()}") from err
    return Core(db=db, lxd=PylxdAdapter(), lxd_readiness=LXDReadiness(ready=False),
                operations=Operations(max_workers=settings.operation_workers,
                                      bulk_workers=settings.bulk_concurrency),
                projects=frozenset(settings.projects) if settings.projects else None,
                service_id=service_id(settings),
                events=make_bus(db, settings.webhooks, settings.events),
                instance_socket=(str(settings.instance_socket_path)
                                 if settings.jwt.enabled else None),
                clock=FileClock(settings.clock.file) if settings.clock.file else SystemClock())


async def recover(watcher: Watcher) -> None:
    """The startup reconcile: settle what a crash left (pending and deleting records),
    re-attach our instances that lack a record, drop records whose instance is gone.
    It runs before any request is served, so no operation can be in flight."""
    summary = await asyncio.to_thread(watcher.reconcile, startup=True)
    for project, error in summary.failed.items():
        logger.error("startup reconcile of project %s failed: %s; its reservations left by "
                     "a crash stay until the next start", project, error)
    logger.info("startup reconcile done: %d change(s) recorded", summary.changes)


def attach_lxd(core: Core, settings: Settings) -> None:
    """Give the core's adapter a client to LXD, or raise `LXDUnavailable` saying why not
    (which the adapter then tells every caller)."""
    adapter = core.lxd
    assert isinstance(adapter, PylxdAdapter)
    try:
        adapter.attach(open_client(settings.lxd))
    except LXDUnavailable as err:
        adapter.problem = err.message
        raise


class Duty(Protocol):
    """A background duty that starts once LXD answers (the watcher, webhooks, ...)."""

    def start(self) -> None: ...


async def bring_up_lxd(core: Core, settings: Settings, watcher: Watcher,
                       duties: Sequence[Duty], stop: asyncio.Event, *,
                       first_attempt: asyncio.Event | None = None,
                       leadership: Leadership | None = None) -> None:
    """Connect to LXD (retrying with backoff until it answers or `stop` is set), run the
    startup reconcile, then open work on instances and start the background `duties`
    (in order).
    With `leadership` (the daemon: processes share the store), the startup reconcile and
    the leader's duties are the leader's: this process tries to lead at once (and keeps
    trying, see `core/duties.py`); work on instances opens as soon as it led and
    recovered, or found another leader; `duties` are then those every process runs.
    `first_attempt` is set once the first attempt failed, or all that succeeded."""
    try:
        await _bring_up(core, settings, watcher, duties, stop, first_attempt, leadership)
    finally:
        if first_attempt is not None:
            first_attempt.set()


async def _bring_up(core: Core, settings: Settings, watcher: Watcher,
                    duties: Sequence[Duty], stop: asyncio.Event,
                    first_attempt: asyncio.Event | None,
                    leadership: Leadership | None) -> None:
    delay, logged_at = LXD_RETRY_MIN, None
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            await asyncio.to_thread(attach_lxd, core, settings)
        except LXDUnavailable as err:
            if first_attempt is not None:
                first_attempt.set()
            core.lxd_readiness.problem = err.message
            if logged_at is None or loop.time() - logged_at >= LXD_WAIT_LOG_INTERVAL:
                logger.warning("LXD is not available: %s. Serving anyway: what needs LXD "
                               "answers 503 until it answers; trying again every %g s at "
                               "most", err.message, LXD_RETRY_MAX)
                logged_at = loop.time()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, LXD_RETRY_MAX)
            continue
        logger.info("connected to LXD %s%s", describe(settings.lxd),
                    " (it was not available at start)" if logged_at is not None else "")
        core.lxd_readiness.problem = "the startup reconcile is running"
        if leadership is not None:
            try:
                leading = await asyncio.to_thread(leadership.try_lead)
            except Exception:  # the store did not answer: the election thread tries again
                logger.exception("cannot take part in the leader election yet")
                leading = False
            if not leading:
                logger.info("another process leads (runs the background duties); this "
                            "one serves the API and takes the lead if that one stops")
            core.lxd_readiness.set_ready()
            leadership.start()
            for duty in duties:
                duty.start()
            return
        await recover(watcher)
        if stop.is_set():
            return
        core.lxd_readiness.set_ready()
        for duty in duties:
            duty.start()
        return


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


def _exit_on_lost_locks(reason: str) -> None:
    """Our liveness and leader locks are gone (see `core/duties.py`): stop now, before
    doing anything another process may have taken over; systemd starts us again."""
    logger.critical("%s: stopping at once (exit 1) so that no work runs twice", reason)
    logging.shutdown()
    os._exit(1)


def authenticators_for(settings: Settings) -> Authenticators:
    """JWTs for governors (on HTTPS and the in-instance socket) unless `jwt.enabled` is off."""
    if not settings.jwt.enabled:
        return Authenticators()
    return Authenticators(bearer=JWTAuthenticator(max_lifetime=settings.jwt.max_lifetime,
                                                  leeway=settings.jwt.leeway))


def _unix_paths(settings: Settings) -> list[Path]:
    """The unix sockets the daemon binds (and removes when it stops)."""
    return [settings.socket_path, *([settings.instance_socket_path]
                                    if settings.jwt.enabled else [])]


def bind_sockets(settings: Settings) -> BoundSockets:
    """Bind every listening socket of the service; on a failure, close (and remove) what
    this call bound, never what another process owns."""
    bound = BoundSockets(unix=bind_unix_socket(settings))
    try:
        if settings.jwt.enabled:
            bound.instance = bind_instance_socket(settings)
        if settings.https_bind is not None:
            bound.https = bind_tcp_socket(*settings.https_bind)
    except ConfigError:
        for sock in bound.all():
            path = sock.getsockname() if sock.family == socket.AF_UNIX else None
            sock.close()
            if path:
                Path(path).unlink(missing_ok=True)
        raise
    return bound


def remove_unix_sockets(settings: Settings) -> None:
    for path in _unix_paths(settings):
        path.unlink(missing_ok=True)


async def serve(settings: Settings, role: Role | None = None) -> None:
    """Serve the API until SIGTERM; `role`: this process's part (default: the daemon
    alone, binding its own sockets and running every duty)."""
    role = role or Role()
    caps = plan_connections(settings.http, raise_fd_limit())
    core = build_core(settings)
    try:
        sockets = role.sockets or bind_sockets(settings)
    except ConfigError:
        core.db.close()
        raise
    tls = prepare_tls(settings, core) if sockets.https is not None else None
    app = WorkerHeader(create_app(core, max_body_bytes=settings.max_body_bytes,
                                  authenticators=authenticators_for(settings),
                                  server_certificate=tls.certificate_pem if tls else None,
                                  audit_settings=settings.audit), role.index)
    listening = [Listening(make_server(app, Listener.UNIX, settings, caps=caps), sockets.unix,
                           "unix")]
    if sockets.instance is not None:
        # The app's lifespan runs once, with the first server.
        instance = make_server(app, Listener.INSTANCE, settings, caps=caps, lifespan="off")
        listening.append(Listening(instance, sockets.instance, "instance", own_loop=True))
    if tls is not None and sockets.https is not None:
        https = make_server(app, Listener.HTTPS, settings, tls=tls, caps=caps, lifespan="off")
        listening.append(Listening(https, sockets.https, "https", own_loop=True))
    # Again, now that the store's journals, the service id and the server key exist.
    secure_state(settings)
    # Changes of trust and access made by the other processes on the store reach this
    # one's TLS context and caches.
    follower = GenerationFollower(core.generations, core.tell_trust_listeners,
                                  core.tell_access_listeners)
    follower.start()
    # Events of the other processes sharing the store reach this one's streams, LXD or not.
    assert core.events is not None
    core.events.start()
    watcher = Watcher(core, interval=settings.reconcile_interval)
    webhooks = WebhookService(core, settings.webhooks, settings.events,
                              pet_interval=settings.pets.check_interval)
    pools = WarmPools(core)
    leadership = Leadership(core, reconcile=lambda: watcher.reconcile(startup=True),
                            duties=[watcher, webhooks, pools], on_lost=_exit_on_lost_locks,
                            on_recovered=core.lxd_readiness.set_ready)
    # Every process settles the lifecycle hooks it began (it holds their operations);
    # the leader also those of dead processes.
    hooks = HookTimer(core, leading=lambda: leadership.leader)
    await asyncio.to_thread(leadership.join)
    stop, first_attempt = asyncio.Event(), asyncio.Event()
    lxd = asyncio.create_task(bring_up_lxd(core, settings, watcher, [hooks], stop,
                                           first_attempt=first_attempt,
                                           leadership=leadership), name="bring-up-lxd")
    try:
        # With LXD there at start (the common case) the startup reconcile ends before the
        # first request is served, as it always did; without, serving starts at once.
        await first_attempt.wait()
        logger.info("serving the deployments API on %s%s%s (connections at most: %d "
                    "HTTPS, %d per address, %d in-instance, %d admin)%s", settings.socket_path,
                    f", {settings.instance_socket_path} (in-instance)"
                    if sockets.instance is not None else "",
                    f" and https://{settings.https_address}" if tls else "",
                    caps.https, caps.https_per_address, caps.instance, caps.unix,
                    f" as worker {role.index} (pid {os.getpid()}, process {core.unit_id})"
                    if not role.owns_sockets else "")
        # What start-up made (modules, the app, the store's machinery) lives as long as
        # the process: out of the collector's sight, a full collection (which holds the
        # GIL, every loop waiting) walks only what requests and connections make.
        gc.freeze()
        await run_servers(listening, tls)
    finally:
        stop.set()
        await lxd  # a startup reconcile under way ends first (it uses the store)
        await asyncio.to_thread(hooks.stop)
        await asyncio.to_thread(leadership.stop)  # the duties it started, in reverse
        await asyncio.to_thread(follower.stop)
        await asyncio.to_thread(core.events.stop)
        if role.owns_sockets:
            sockets.close()
            remove_unix_sockets(settings)
        core.db.close()


class WorkerHeader:
    """The app, answering with the header that names the worker which served (so that a
    client, and the tests, see the requests spread over the workers)."""

    def __init__(self, app: ASGIApp, index: int) -> None:
        self.app = app
        self._header = (WORKER_HEADER, str(index).encode())

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self._header

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def run(config_path: str | Path | None = None) -> int:
    """Entry point of `lxd-deployments daemon`; returns the process exit code."""
    try:
        settings = load_settings(Path(config_path) if config_path else None)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    os.umask(UMASK)  # what the daemon makes is its own (see statedir.py)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The admin socket's loop shares the GIL with the HTTPS and in-instance loops: hand it
    # over every millisecond rather than every 5, so that a flood there delays an admin's
    # answer by a few ms, not by tens.
    sys.setswitchinterval(SWITCH_INTERVAL)
    if threading.current_thread() is threading.main_thread():
        # While serving, `run_servers` stops the servers on SIGTERM; before (the startup
        # reconcile) and after, make SIGTERM an exit that runs serve()'s clean-up (stop
        # the watcher, remove the socket, close the store) rather than a kill.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if settings.workers > 1:
        # Imported here: the supervisor runs this module's `serve` in each worker.
        from .supervisor import supervise
        return supervise(settings)
    try:
        asyncio.run(serve(settings))
    except (ConfigError, LXDUnavailable) as err:
        logger.error("%s", err)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
