"""Capacity: how many more instances of each shape fit on the host, and when the host is
under memory pressure, from LXD's `/1.0/resources` and the shapes' limits.

A shape's instance needs what its template's `limits.memory` and `limits.cpu` say (the
template's own config over its profiles', as LXD expands them). Memory fits in what the
host has free; CPU fits in `threads * cpu_allocation_ratio` minus the `limits.cpu` of the
running instances the service can see. A limit the shape does not set does not limit it;
`scaling_maximum` always does. On an LXD cluster, `/1.0/resources` describes the member
the service talks to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15, "eb": 10**18,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50, "eib": 2**60,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_memory(value: str | None, host_total: int | None = None) -> int | None:
    """Bytes for an LXD `limits.memory` ("512MiB", "1GB", "536870912", "50%"), or None
    when unset or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.endswith("%"):
        if host_total is None:
            return None
        try:
            return int(host_total * float(value[:-1]) / 100)
        except ValueError:
            return None
    match = _SIZE.fullmatch(value)
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_cpu(value: str | None) -> float | None:
    """CPUs for an LXD `limits.cpu`: a count ("2") or a set of CPUs ("0-3", "1,3")."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    cpus: set[int] = set()
    try:
        for part in value.split(","):
            first, _, last = part.strip().partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    except ValueError:
        return None
    return float(len(cpus)) or None


@dataclass(frozen=True)
class Host:
    memory_total: int
    memory_used: int
    cpu_threads: int

    @property
    def memory_free(self) -> int:
        return max(self.memory_total - self.memory_used, 0)

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_total if self.memory_total else 0.0

    def to_api(self) -> dict[str, Any]:
        return {"memory_total": self.memory_total, "memory_used": self.memory_used,
                "memory_used_percent": round(self.memory_percent, 1),
                "cpu_threads": self.cpu_threads}


def host_of(resources: Mapping[str, Any]) -> Host:
    """The host's figures from LXD's `/1.0/resources`."""
    memory = resources.get("memory") or {}
    cpu = resources.get("cpu") or {}
    threads = cpu.get("total")
    if not threads:
        threads = sum(len(core.get("threads") or [])
                      for socket in cpu.get("sockets") or [] for core in socket.get("cores") or [])
    return Host(memory_total=int(memory.get("total") or 0),
                memory_used=int(memory.get("used") or 0), cpu_threads=int(threads or 0))


def instance_limits(config: Mapping[str, str], host: Host) -> tuple[int | None, float | None]:
    """(memory bytes, cpus) an instance with this (expanded) config may use."""
    return (parse_memory(config.get("limits.memory"), host.memory_total),
            parse_cpu(config.get("limits.cpu")))


def allocated_cpu(instances: Iterable[Mapping[str, Any]]) -> float:
    """The `limits.cpu` handed to running instances (those without one count nothing)."""
    total = 0.0
    for instance in instances:
        status = instance.get("status") or (instance.get("state") or {}).get("status")
        if status not in ("Running", "Frozen"):
            continue
        config = instance.get("expanded_config") or instance.get("config") or {}
        total += parse_cpu(config.get("limits.cpu")) or 0.0
    return total


def offer(host: Host, config: Mapping[str, str], *, current: int, maximum: int,
          cpu_allocated: float, cpu_allocation_ratio: float = 1.0) -> dict[str, Any]:
    """How many more instances of a shape fit, and what limits that number."""
    memory, cpus = instance_limits(config, host)
    count, limited_by = max(maximum - current, 0), "scaling_maximum"
    if memory:
        by_memory = host.memory_free // memory
        if by_memory < count:
            count, limited_by = by_memory, "memory"
    if cpus:
        spare = host.cpu_threads * cpu_allocation_ratio - cpu_allocated
        by_cpu = max(math.floor(spare / cpus + 1e-9), 0)
        if by_cpu < count:
            count, limited_by = by_cpu, "cpu"
    return {"count": int(count), "current": current, "maximum": maximum,
            "limited_by": limited_by, "memory_per_instance": memory, "cpu_per_instance": cpus}


@dataclass(frozen=True)
class ShapeUsage:
    """A shape's part in the host's memory use, for sharing out pressure."""

    key: Any
    current: int
    minimum: int
    running: int
    memory_usage: int


def pressure_counts(host: Host, threshold_percent: float, shapes: Iterable[ShapeUsage]
                    ) -> dict[Any, int]:
    """Under memory pressure, the count each shape is asked to shrink to.

    The memory over the threshold is shared out between the shapes in proportion to the
    memory their instances use; a shape sheds enough instances (at its average use per
    instance) to free its share, never below its minimum. Shapes that cannot shrink, or
    use nothing, are left out. Empty when the host is under the threshold."""
    if not host.memory_total or host.memory_percent < threshold_percent:
        return {}
    excess = host.memory_used - host.memory_total * threshold_percent / 100.0
    shapes = [s for s in shapes if s.memory_usage > 0 and s.running > 0]
    total_usage = sum(s.memory_usage for s in shapes)
    wanted: dict[Any, int] = {}
    for shape in shapes:
        if shape.current <= shape.minimum:
            continue
        share = excess * shape.memory_usage / total_usage
        per_instance = shape.memory_usage / shape.running
        shed = max(math.ceil(share / per_instance - 1e-9), 1)
        wanted[shape.key] = max(shape.minimum, shape.current - shed)
    return wanted
