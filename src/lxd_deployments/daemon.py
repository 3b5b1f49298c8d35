"""The daemon: read the config, open the store and LXD, serve the API on its sockets."""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from pathlib import Path

from .api import create_app
from .auth.caller import Listener
from .auth.identify import Authenticators
from .auth.jwt import JWTAuthenticator
from .config import ConfigError, Settings, load_settings
from .core import Core
from .core.hook_timer import HookTimer
from .core.operations import Operations
from .core.warm_pool import WarmPools
from .core.watcher import Watcher
from .errors import LXDUnavailable
from .lxd import connect
from .servers import Listening, bind_tcp_socket, make_server, prepare_tls, run_servers
from .store import open_database
from .webhooks.service import WebhookService, make_bus

logger = logging.getLogger("lxd_deployments")


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
    that a lost database can be rebuilt from LXD by the same service."""
    path = settings.service_id_path
    if path.exists():
        return path.read_text().strip()
    value = str(uuid.uuid4())
    path.write_text(value + "\n")
    return value


def build_core(settings: Settings) -> Core:
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = open_database(settings.database_path)
    return Core(db=db, lxd=connect(settings.lxd),
                operations=Operations(max_workers=settings.operation_workers,
                                      bulk_workers=settings.bulk_concurrency),
                projects=frozenset(settings.projects) if settings.projects else None,
                service_id=service_id(settings),
                events=make_bus(db, settings.webhooks, settings.events),
                instance_socket=(str(settings.instance_socket_path)
                                 if settings.jwt.enabled else None))


async def recover(watcher: Watcher) -> None:
    """The startup reconcile: settle what a crash left (pending and deleting records),
    re-attach our instances that lack a record, drop records whose instance is gone.
    It runs before any request is served, so no operation can be in flight."""
    summary = await asyncio.to_thread(watcher.reconcile, startup=True)
    for project, error in summary.failed.items():
        logger.error("startup reconcile of project %s failed: %s; its reservations left by "
                     "a crash stay until the next start", project, error)
    logger.info("startup reconcile done: %d change(s) recorded", summary.changes)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(0)


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


async def serve(settings: Settings) -> None:
    core = build_core(settings)
    tls = prepare_tls(settings, core) if settings.https_bind else None
    app = create_app(core, max_body_bytes=settings.max_body_bytes,
                     authenticators=authenticators_for(settings),
                     server_certificate=tls.certificate_pem if tls else None)
    unix_sock = bind_unix_socket(settings)
    listening = [Listening(make_server(app, Listener.UNIX, settings), unix_sock, "unix")]
    try:
        if settings.jwt.enabled:
            # The app's lifespan runs once, with the first server.
            instance = make_server(app, Listener.INSTANCE, settings, lifespan="off")
            listening.append(Listening(instance, bind_instance_socket(settings), "instance"))
        if tls is not None:
            https = make_server(app, Listener.HTTPS, settings, ssl_context=tls.context,
                                lifespan="off")
            listening.append(Listening(https, bind_tcp_socket(*settings.https_bind), "https"))
    except ConfigError:
        for item in listening:  # only what this process bound: another may own the rest
            bound = item.sock.getsockname() if item.sock.family == socket.AF_UNIX else None
            item.sock.close()
            if bound:
                Path(bound).unlink(missing_ok=True)
        core.db.close()
        raise
    watcher = Watcher(core, interval=settings.reconcile_interval)
    webhooks = WebhookService(core, settings.webhooks, settings.events)
    hooks = HookTimer(core)
    pools = WarmPools(core)
    try:
        await recover(watcher)
        watcher.start()
        webhooks.start()
        hooks.start()
        pools.start()
        logger.info("serving the deployments API on %s%s%s", settings.socket_path,
                    f", {settings.instance_socket_path} (in-instance)"
                    if settings.jwt.enabled else "",
                    f" and https://{settings.https_address}" if tls else "")
        await run_servers(listening, tls)
    finally:
        await asyncio.to_thread(pools.stop)
        await asyncio.to_thread(hooks.stop)
        await asyncio.to_thread(webhooks.stop)
        await asyncio.to_thread(watcher.stop)
        for item in listening:
            item.sock.close()
        for path in _unix_paths(settings):
            path.unlink(missing_ok=True)
        core.db.close()


def run(config_path: str | Path | None = None) -> int:
    """Entry point of `lxd-deployments daemon`; returns the process exit code."""
    try:
        settings = load_settings(Path(config_path) if config_path else None)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if threading.current_thread() is threading.main_thread():
        # While serving, `run_servers` stops the servers on SIGTERM; before (the startup
        # reconcile) and after, make SIGTERM an exit that runs serve()'s clean-up (stop
        # the watcher, remove the socket, close the store) rather than a kill.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        asyncio.run(serve(settings))
    except (ConfigError, LXDUnavailable) as err:
        logger.error("%s", err)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
