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

import uvicorn

from .api import create_app
from .config import ConfigError, Settings, load_settings
from .core import Core
from .core.operations import Operations
from .core.watcher import Watcher
from .errors import LXDUnavailable
from .lxd import connect
from .store import open_database

logger = logging.getLogger("lxd_deployments")


def bind_unix_socket(settings: Settings) -> socket.socket:
    """Bind the admin socket ourselves so its mode and group are set before anyone connects."""
    path = settings.socket_path
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
    finally:
        os.umask(old_umask)
    os.chmod(path, int(settings.unix_socket_mode, 8))
    if settings.unix_socket_group:
        os.chown(path, -1, grp.getgrnam(settings.unix_socket_group).gr_gid)
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
    return Core(db=open_database(settings.database_path), lxd=connect(settings.lxd),
                operations=Operations(max_workers=settings.operation_workers),
                projects=frozenset(settings.projects) if settings.projects else None,
                service_id=service_id(settings))


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


async def serve(settings: Settings) -> None:
    core = build_core(settings)
    app = create_app(core, max_body_bytes=settings.max_body_bytes)
    unix_sock = bind_unix_socket(settings)
    watcher = Watcher(core, interval=settings.reconcile_interval)
    config = uvicorn.Config(app, log_level=settings.log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        await recover(watcher)
        watcher.start()
        logger.info("serving the deployments API on %s", settings.socket_path)
        await server.serve(sockets=[unix_sock])
    finally:
        await asyncio.to_thread(watcher.stop)
        unix_sock.close()
        Path(settings.socket_path).unlink(missing_ok=True)
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
        # uvicorn shuts down gracefully on SIGTERM, then raises the signal again once it
        # has put the previous handler back: make that an exit that runs serve()'s clean-up
        # (stop the watcher, remove the socket, close the store) rather than a kill.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        asyncio.run(serve(settings))
    except (ConfigError, LXDUnavailable) as err:
        logger.error("%s", err)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
