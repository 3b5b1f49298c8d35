"""`lxd-deployments copy-store --config FILE`: move the SQLite store into PostgreSQL, once.

A command of the machine the service runs on, beside `daemon`: it reads the same config
file, so it copies exactly the store the service would have served (`state_dir`'s SQLite
file) into exactly the one it will serve (`database`). The charm runs it on the unit
holding the application's store when the database relation first gives credentials;
an admin may run it by hand (`python -m lxd_deployments copy-store` is the same).

Exit 0: copied, or copied before (running it again is harmless); exit 1 with the reason:
the target holds other data, the schema versions differ, or the service still runs on
the SQLite store (what it wrote after the copy would be lost). See store/copy.py.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

from .context import CommandError, Context
from .parsing import add_command

# Seconds to wait for the service's socket to answer when checking that it is stopped.
SOCKET_PROBE_TIMEOUT = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    command = add_command(
        subparsers, "copy-store", cmd_copy_store,
        "Copy the SQLite store into the configured PostgreSQL store, once",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    command.add_argument("--config", metavar="FILE", help="service configuration file")


def cmd_copy_store(ctx: Context, args: argparse.Namespace) -> int:
    # Imported here: the CLI must start without loading the store's stack.
    from sqlalchemy.exc import SQLAlchemyError

    from lxd_deployments.config import ConfigError, load_settings
    from lxd_deployments.store import open_database
    from lxd_deployments.store.copy import CopyRefused, copy_store, find_copy, store_id

    try:
        settings = load_settings(Path(args.config) if args.config else None)
    except ConfigError as err:
        raise CommandError(str(err)) from err
    if settings.database is None:
        raise CommandError("the config names no `database` to copy into: set it to the "
                           "PostgreSQL store (postgresql://USER@HOST:PORT/DBNAME)")
    source_path = settings.database_path
    if not source_path.exists():
        ctx.out(f"no SQLite store at {source_path}: nothing to copy")
        return 0
    databases = []
    try:
        try:
            databases.append(source := open_database(source_path))
            databases.append(target := open_database(settings))
        except (ConfigError, SQLAlchemyError, RuntimeError) as err:
            raise CommandError(f"cannot open the stores: {_reason(err)}") from err
        where = f"{source_path} into {settings.database}"
        done = find_copy(target, store_id(source))
        if done is None:
            if _answers(settings.socket_path):
                raise CommandError(
                    f"the service still runs on {source_path} (its socket "
                    f"{settings.socket_path} answers): stop it first, or what it writes "
                    "after the copy is lost")
            try:
                report = copy_store(source, target, source_name=str(source_path))
            except CopyRefused as err:
                raise CommandError(str(err)) from err
            except SQLAlchemyError as err:
                raise CommandError(f"the copy failed, nothing was copied: "
                                   f"{_reason(err)}") from err
            if report.copied:
                ctx.out(f"copied {report.row_count} rows of {len(report.rows)} tables from "
                        f"{where}")
                return 0
            done = report.copied_at
        ctx.out(f"already copied: {where} at {done}")
        return 0
    finally:
        for database in databases:
            database.close()


def _answers(path: Path) -> bool:
    """Whether something accepts connections on the unix socket `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(SOCKET_PROBE_TIMEOUT)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _reason(err: Exception) -> str:
    """One line: the driver's own message rather than SQLAlchemy's wrapping of it."""
    original = getattr(err, "orig", None)
    return " ".join(str(original if original is not None else err).split())
