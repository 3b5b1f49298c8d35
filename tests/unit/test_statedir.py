"""The state dir's modes are enforced whatever existed: dirs 0700, files 0600, links
never followed, sockets left as bound."""

from __future__ import annotations

import grp
import os
import socket
import stat

from lxd_deployments.statedir import create_private, secure_state_dir


def _mode(path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_pre_existing_open_state_dir_is_closed(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "database.sqlite3").write_text("secrets")
    (state / "sub").mkdir()
    (state / "sub" / "file").write_text("x")
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    for path in (state / "database.sqlite3", state / "sub" / "file", outside):
        path.chmod(0o644)
    (state / "sub").chmod(0o777)
    (state / "link").symlink_to(outside)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(state / "unix.socket"))
    os.chmod(state / "unix.socket", 0o660)
    try:
        secure_state_dir(state)
        assert _mode(state) == 0o700
        assert _mode(state / "database.sqlite3") == 0o600
        assert _mode(state / "sub") == 0o700
        assert _mode(state / "sub" / "file") == 0o600
        assert _mode(outside) == 0o644  # a link's target is never changed
        assert _mode(state / "unix.socket") == 0o660
    finally:
        sock.close()


def test_with_a_socket_group_the_dir_may_be_traversed_by_that_group(tmp_path):
    state = tmp_path / "state"
    group = grp.getgrgid(os.getgid()).gr_name
    secure_state_dir(state, socket_group=group, socket_path=state / "unix.socket")
    assert _mode(state) == 0o710
    # The socket elsewhere: the dir stays closed.
    secure_state_dir(state, socket_group=group, socket_path=tmp_path / "unix.socket")
    assert _mode(state) == 0o700


def test_a_new_database_file_is_private_from_the_start(tmp_path):
    path = tmp_path / "database.sqlite3"
    create_private(path)
    assert _mode(path) == 0o600
    path.write_text("kept")
    create_private(path)  # an existing one is left as it is
    assert path.read_text() == "kept"
