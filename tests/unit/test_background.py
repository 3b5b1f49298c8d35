"""BackgroundLoop and the loops on it that sleep on an event of their own (the lifecycle
hook timer, the warm pool refiller): woken early by that event, and stopped at once
even when their tick is an hour."""

from __future__ import annotations

import threading
import time

from lxd_deployments.background import BackgroundLoop
from lxd_deployments.core import hook_timer, warm_pool

WAIT = 10.0  # seconds a test waits for a condition before failing
HOUR = 3600.0


def _alive(name: str) -> bool:
    return any(t.name == name and t.is_alive() for t in threading.enumerate())


class _Calls:
    """Counts calls of a stand-in for the loop's work; `wait_for(n)` waits for n calls."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def __call__(self, *args, **kwargs) -> int:
        with self._changed:
            self.count += 1
            self._changed.notify_all()
        return 0

    def wait_for(self, number: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= number, WAIT)


def test_stop_wakes_a_loop_sleeping_on_its_own_event():
    own, ended = threading.Event(), threading.Event()

    def loop(stopping: threading.Event) -> None:
        while not stopping.is_set():
            own.wait(HOUR)
        ended.set()

    background = BackgroundLoop("test-own-event", wake=own.set)
    background.start(loop)
    started = time.monotonic()
    background.stop(timeout=WAIT)

    assert ended.is_set()
    assert time.monotonic() - started < WAIT
    assert not background.running and not _alive("test-own-event")


def test_start_twice_runs_one_thread_and_a_stopped_loop_starts_again():
    calls = _Calls()

    def loop(stopping: threading.Event) -> None:
        calls()
        stopping.wait(HOUR)

    background = BackgroundLoop("test-restart")
    background.start(loop)
    background.start(loop)
    assert calls.wait_for(1)
    background.stop(timeout=WAIT)
    background.start(loop)
    assert calls.wait_for(2)
    background.stop(timeout=WAIT)

    assert calls.count == 2
    assert not _alive("test-restart")


def test_hook_timer_is_woken_by_a_kick_and_stops_at_once(core, monkeypatch):
    settle = _Calls()
    monkeypatch.setattr(hook_timer, "settle_due_hooks", settle)
    timer = hook_timer.HookTimer(core, tick=HOUR)

    timer.start()
    assert settle.wait_for(1)
    core.hooks.kick()  # an answer came in
    assert settle.wait_for(2)
    timer.stop(timeout=WAIT)

    assert not _alive("lifecycle-hooks")


def test_warm_pools_are_woken_by_a_take_and_stop_at_once(core, monkeypatch):
    refill = _Calls()
    monkeypatch.setattr(warm_pool, "refill", refill)
    monkeypatch.setattr(warm_pool, "recover", lambda core: None)
    monkeypatch.setattr(warm_pool, "sweep", lambda core: 0)
    pools = warm_pool.WarmPools(core, tick=HOUR)

    pools.start()
    assert refill.wait_for(1)
    core.warm_pool_wakeup.set()  # what a launch that took a pool instance does
    assert refill.wait_for(2)
    pools.stop(timeout=WAIT)

    assert not _alive("warm-pools")
