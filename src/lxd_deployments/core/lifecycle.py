"""Lifecycle hooks and the shape options that steer removals.

A shape with `lifecycle.terminate_timeout` (seconds, > 0) has a terminating hook: every
removal of one of its instances (a governor's delete, a scale-in, a forced delete of
its shape or deployment) first moves the record to `terminating` (still counted, it
still exists), tells the governor (event `instance-terminating`, on the webhook and the
events stream), and waits until the governor answers on
`POST .../instances/{i}/lifecycle` (`continue` or `abandon`: both let the removal go on,
as AWS's terminating hooks; `heartbeat`: the timeout starts again) or the timeout
passes (then `lifecycle.default_result` is the answer). Only then is the instance
deleted in LXD. Without the option nothing changes: a removal deletes at once.

The record carries the hook (status, deadline, answer, start) so that a hook survives a
restart: the timer (`core/hook_timer.py`) settles every due hook it finds in the store,
whichever process began it, and a claim in the store (`claim_hook`) makes sure one
settler only acts on it.

This module holds the options, their checks, and the answers; the removal itself is in
`core/instances.py`, which this module does not import.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import Conflict, InvalidInput
from ..store import instances as records
from ..store.rows import InstanceRow

TERMINATE_TIMEOUT_KEY = "lifecycle.terminate_timeout"
LAUNCH_TIMEOUT_KEY = "lifecycle.launch_timeout"
DEFAULT_RESULT_KEY = "lifecycle.default_result"
TERMINATION_POLICY_KEY = "scaling.termination_policy"
WARM_POOL_SIZE_KEY = "warm_pool.size"
# Where, inside each instance, the in-instance socket appears so that the instance says
# "ready" itself (`core/instance_ready.py`): `unix:/path` or `tcp:127.0.0.1:PORT`.
READY_SOCKET_KEY = "lifecycle.ready_socket"
LIFECYCLE_CONFIG_KEYS = frozenset({TERMINATE_TIMEOUT_KEY, LAUNCH_TIMEOUT_KEY,
                                   DEFAULT_RESULT_KEY, TERMINATION_POLICY_KEY,
                                   WARM_POOL_SIZE_KEY, READY_SOCKET_KEY})

CONTINUE = "continue"
ABANDON = "abandon"
HEARTBEAT = "heartbeat"
RESULTS = (CONTINUE, ABANDON)
ACTIONS = (*RESULTS, HEARTBEAT)
# A timed-out hook's answer when the shape does not say: the removal goes on.
DEFAULT_RESULT = CONTINUE

# Limits: one hook's timeout, and how long heartbeats may keep it open (AWS: 48 hours,
# and at most 100 times the timeout).
MAX_HOOK_TIMEOUT = 7200
MAX_HOOK_SECONDS = 48 * 3600
MAX_HEARTBEAT_FACTOR = 100
# A warm pool is a few stopped instances, not a second shape.
MAX_WARM_POOL = 50
# A unix socket path may not exceed 107 bytes; room is left for LXD's own handling.
MAX_READY_PATH = 100
_READY_UNIX = re.compile(r"unix:((/[A-Za-z0-9._+@-]+)+)")
# Loopback only: with `bind: instance` the port is opened in the instance's own network
# namespace, and nothing outside the instance may reach it.
_READY_TCP = re.compile(r"tcp:127\.0\.0\.1:([0-9]{1,5})")


@dataclass(frozen=True)
class Hook:
    """A shape's hook: its timeout (seconds) and what a timeout answers."""

    timeout: int
    default_result: str = DEFAULT_RESULT

    def deadline(self, now: float) -> float:
        return now + self.timeout

    def limit(self, started: float) -> float:
        """The latest a heartbeat can push the deadline to."""
        return started + min(MAX_HOOK_SECONDS, MAX_HEARTBEAT_FACTOR * self.timeout)


def _seconds(config: dict[str, str], key: str, maximum: int) -> int:
    value = config.get(key, "")
    if value == "":
        return 0
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f'{key} must be a number of seconds, not "{value}"') from None
    if not 0 <= number <= maximum:
        raise InvalidInput(f"{key} must be between 0 and {maximum} seconds")
    return number


def check_config(config: dict[str, str]) -> None:
    """Refuse lifecycle option values that could only fail later (400)."""
    _seconds(config, TERMINATE_TIMEOUT_KEY, MAX_HOOK_TIMEOUT)
    _seconds(config, LAUNCH_TIMEOUT_KEY, MAX_HOOK_TIMEOUT)
    result = config.get(DEFAULT_RESULT_KEY, "")
    if result not in ("", *RESULTS):
        raise InvalidInput(f"{DEFAULT_RESULT_KEY} must be one of {', '.join(RESULTS)}")
    policy = config.get(TERMINATION_POLICY_KEY, "")
    if policy not in ("", *records.TERMINATION_POLICIES):
        raise InvalidInput(f"{TERMINATION_POLICY_KEY} must be one of "
                           f"{', '.join(records.TERMINATION_POLICIES)}")
    size = config.get(WARM_POOL_SIZE_KEY, "")
    if size != "" and (not size.isdigit() or int(size) > MAX_WARM_POOL):
        raise InvalidInput(f"{WARM_POOL_SIZE_KEY} must be a number from 0 to "
                           f"{MAX_WARM_POOL}")
    _check_ready_socket(config.get(READY_SOCKET_KEY, ""))


def _check_ready_socket(address: str) -> None:
    if address == "":
        return
    unix, tcp = _READY_UNIX.fullmatch(address), _READY_TCP.fullmatch(address)
    if unix is not None:
        path = unix.group(1)
        if any(part in (".", "..") for part in path.split("/")) or \
                len(path) > MAX_READY_PATH:
            raise InvalidInput(f"{READY_SOCKET_KEY}: the path must have no . or .. parts "
                               f"and at most {MAX_READY_PATH} characters")
        return
    if tcp is not None and 1 <= int(tcp.group(1)) <= 65535:
        return
    raise InvalidInput(f'{READY_SOCKET_KEY} must be "unix:/absolute/path" (letters, digits '
                       'and . _ + @ -) or "tcp:127.0.0.1:PORT" (1-65535), not '
                       f'"{address[:120]}"')


def ready_socket(config: dict[str, str]) -> str:
    """Where the instance finds the in-instance socket to say it is ready ("": the
    shape's instances do not say it themselves; only with a launching hook)."""
    if launch_hook(config) is None:
        return ""
    return config.get(READY_SOCKET_KEY, "")


def _hook(config: dict[str, str], key: str) -> Hook | None:
    timeout = _seconds(config, key, MAX_HOOK_TIMEOUT)
    if not timeout:
        return None
    return Hook(timeout, config.get(DEFAULT_RESULT_KEY) or DEFAULT_RESULT)


def terminate_hook(config: dict[str, str]) -> Hook | None:
    """The shape's terminating hook; None: removals delete at once."""
    return _hook(config, TERMINATE_TIMEOUT_KEY)


def launch_hook(config: dict[str, str]) -> Hook | None:
    """The shape's launching hook; None: a started instance is ready at once."""
    return _hook(config, LAUNCH_TIMEOUT_KEY)


def termination_policy(config: dict[str, str]) -> str:
    return config.get(TERMINATION_POLICY_KEY) or records.NEWEST


def warm_pool_size(config: dict[str, str]) -> int:
    size = config.get(WARM_POOL_SIZE_KEY, "")
    return int(size) if size.isdigit() else 0


def hook_of_record(config: dict[str, str], record: InstanceRow) -> Hook | None:
    """The hook a record in `terminating` or `launching` is in."""
    if record.status == records.TERMINATING:
        return terminate_hook(config)
    if record.status == records.LAUNCHING:
        return launch_hook(config)
    return None


def result_of(record: InstanceRow, hook: Hook | None, now: float) -> str | None:
    """The answer a hooked record settles with now, None while it still waits."""
    if record.hook_result:
        return record.hook_result
    if hook is None or record.hook_deadline <= now:
        return hook.default_result if hook is not None else DEFAULT_RESULT
    return None


def answer(conn, record: InstanceRow, config: dict[str, str], action: str) -> dict[str, Any]:
    """The governor's answer to a record's hook, in the caller's write transaction."""
    if action not in ACTIONS:
        raise InvalidInput(f'Unknown lifecycle action "{action}": use one of '
                           f"{', '.join(ACTIONS)}")
    if record.status not in (records.TERMINATING, records.LAUNCHING) or record.hook_result:
        raise Conflict(f'Instance "{record.instance_name}" is not waiting in a lifecycle '
                       f"hook (it is {record.status})")
    hook = hook_of_record(config, record) or Hook(1)
    if action == HEARTBEAT:
        deadline = min(hook.deadline(time.time()), hook.limit(record.hook_started))
        if not records.extend_hook(conn, record.id, record.status, deadline):
            raise Conflict(f'Instance "{record.instance_name}" left its lifecycle hook')
        return {"status": record.status, "deadline": deadline}
    if not records.answer_hook(conn, record.id, record.status, action):
        raise Conflict(f'Instance "{record.instance_name}" left its lifecycle hook')
    return {"status": record.status, "result": action}


def describe(record: InstanceRow) -> dict[str, Any]:
    """A record's lifecycle as `GET .../instances/{i}/lifecycle` shows it."""
    shown: dict[str, Any] = {"status": record.status, "revision": record.revision,
                             "protected": record.protected}
    if record.status in (records.TERMINATING, records.LAUNCHING):
        shown["hook"] = {"deadline": record.hook_deadline, "result": record.hook_result,
                         "seconds_left": max(0.0, round(record.hook_deadline - time.time(),
                                                        1))}
    return shown


# Settles a hooked record whose answer is in (the removal or the launch's end).
Settle = Callable[[str], None]


@dataclass
class Hooks:
    """The hooks this process began and waits on: record id -> what settles it (so the
    operation the governor holds ends with the removal). A hook of another process, or
    of this one before a restart, has no entry: the timer settles it with an operation
    of its own."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waiting: dict[int, Settle] = field(default_factory=dict)
    _kick: threading.Event = field(default_factory=threading.Event)

    def wait(self, record_id: int, settle: Settle) -> None:
        with self._lock:
            self._waiting[record_id] = settle
        self._kick.set()

    def take(self, record_id: int) -> Settle | None:
        with self._lock:
            return self._waiting.pop(record_id, None)

    def kick(self) -> None:
        """An answer came in: settle it now rather than at the next tick."""
        self._kick.set()

    def pause(self, seconds: float) -> None:
        self._kick.wait(seconds)
        self._kick.clear()
