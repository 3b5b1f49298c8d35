"""The state dir's modes, enforced at every start: whatever existed before, the store
(webhook secrets), the server key and the service id are for the service's user only.

- the state dir itself: 0700 (0710 with the admin socket's group, when the admin socket
  lives in it and `unix_socket_group` is set: that group may reach the socket, and
  still not list or read anything);
- every directory below it: 0700; every regular file below it: 0600;
- sockets keep the modes they are bound with (`unix_socket_mode`, 0660 for the
  in-instance socket); symbolic links are never followed (nor changed).

The daemon's umask is 0077 too (`UMASK`, set in `daemon.run`), so that what is made
later is born private; SQLite gives its `-wal` and `-shm` files the database's own mode,
and the database is created 0600 before SQLite opens it (`create_private`).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
DIR_MODE_WITH_GROUP = 0o710
FILE_MODE = 0o600
UMASK = 0o077


def _set_mode(path: Path, mode: int, info: os.stat_result) -> None:
    if stat.S_IMODE(info.st_mode) != mode:
        logger.warning("state dir: %s had mode %04o; set to %04o", path,
                       stat.S_IMODE(info.st_mode), mode)
        os.chmod(path, mode)


def secure_state_dir(state_dir: Path, *, socket_group: str | None = None,
                     socket_path: Path | None = None) -> None:
    """Create the state dir if needed and enforce the modes above on all it holds."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    top_mode = DIR_MODE
    group_id = None
    if socket_group and socket_path is not None and socket_path.parent == state_dir:
        top_mode = DIR_MODE_WITH_GROUP
        group_id = grp.getgrnam(socket_group).gr_gid
    info = state_dir.lstat()
    if stat.S_ISLNK(info.st_mode):
        info = state_dir.stat()  # the configured path itself may be a link: its target
    _set_mode(state_dir, top_mode, info)
    if group_id is not None and info.st_gid != group_id:
        os.chown(state_dir, -1, group_id)
    for root, dirs, files in os.walk(state_dir):  # never follows links
        for name in dirs + files:
            path = Path(root) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                _set_mode(path, DIR_MODE, info)
            elif stat.S_ISREG(info.st_mode):
                _set_mode(path, FILE_MODE, info)


def create_private(path: Path) -> None:
    """Create an empty file with mode 0600 unless it exists (an empty file is an empty
    SQLite database), so that it is never readable by others, not even for a moment."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
