"""The supervisor's rules for its workers (the processes themselves are exercised in
tests/integration/test_workers.py): how many, and how fast a dying one is restarted."""

from __future__ import annotations

import os
import socket
import time

import pytest

from lxd_deployments import supervisor
from lxd_deployments.config import MAX_WORKERS, ConfigError, Settings, load_settings
from lxd_deployments.process_role import BoundSockets


@pytest.mark.parametrize("value", [0, MAX_WORKERS + 1, "many"])
def test_workers_out_of_bounds_are_refused_at_start(tmp_path, value):
    path = tmp_path / "config.yaml"
    path.write_text(f"workers: {value}\n")
    with pytest.raises(ConfigError, match=r"^.*config.yaml: workers: "):
        load_settings(path)


def test_one_worker_is_the_default():
    assert Settings().workers == 1


@pytest.fixture
def supervising(tmp_path):
    a, b = socket.socketpair(socket.AF_UNIX)
    sockets = BoundSockets(unix=a)
    yield supervisor.Supervisor(Settings(state_dir=tmp_path, workers=3), sockets)
    a.close()
    b.close()


def test_a_worker_that_keeps_dying_is_restarted_ever_more_slowly(supervising):
    slot = supervising.slots[1]
    pauses = []
    for _ in range(10):
        slot.pid, slot.started = 12345, time.monotonic()  # died at once after its start
        supervising._died(slot, 9)
        pauses.append(slot.pause)
        assert slot.pid == 0 and slot.due >= time.monotonic() + slot.pause - 0.1
    assert pauses[:4] == [supervisor.RESTART_MIN, 1.0, 2.0, 4.0]
    assert max(pauses) == supervisor.RESTART_MAX == pauses[-1]
    # After a run longer than STABLE_AFTER a death is restarted at once again.
    slot.pid, slot.started = 12345, time.monotonic() - supervisor.STABLE_AFTER
    supervising._died(slot, 9)
    assert slot.pause == 0.0
    assert len(supervising.slots) == 3 and [s.index for s in supervising.slots] == [0, 1, 2]


def test_a_worker_exit_is_reaped_and_its_slot_freed(supervising):
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    slot = supervising.slots[2]
    slot.pid, slot.started = pid, time.monotonic()
    deadline = time.monotonic() + 10
    while slot.pid and time.monotonic() < deadline:
        supervising._reap()
        supervising._wake.wait(0.05)  # SIGCHLD is the supervisor's; poll the reap here
    assert slot.pid == 0 and slot.pause == supervisor.RESTART_MIN
