"""Metrics per shape from LXD's instance state: count, CPU and memory use.

`cpu_usage` is LXD's cumulative CPU time (nanoseconds) summed over the shape's instances;
`cpu_cores` is the average number of CPUs they kept busy since the previous sample (None
on the first); `memory_usage` is bytes in use now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CpuSamples:
    """The previous CPU reading of each instance, to turn cumulative time into a rate."""

    readings: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)

    def rate(self, key: tuple[str, str], usage_ns: int, now: float) -> float | None:
        previous = self.readings.get(key)
        self.readings[key] = (usage_ns, now)
        if previous is None or now <= previous[1] or usage_ns < previous[0]:
            return None
        return (usage_ns - previous[0]) / 1e9 / (now - previous[1])

    def forget_except(self, keys: Iterable[tuple[str, str]]) -> None:
        keep = set(keys)
        for key in list(self.readings):
            if key not in keep:
                del self.readings[key]


def _state(instance: Mapping[str, Any]) -> Mapping[str, Any]:
    return instance.get("state") or {}


def shape_metrics(project: str, names: Iterable[str], found: Mapping[str, Mapping[str, Any]],
                  samples: CpuSamples, now: float) -> dict[str, Any]:
    """The metrics of one shape whose records name `names`; `found` maps instance names to
    LXD's objects with state."""
    names = sorted(names)
    per_instance: dict[str, Any] = {}
    cpu_total, memory_total, running = 0, 0, 0
    rates: list[float] = []
    for name in names:
        instance = found.get(name)
        if instance is None:
            per_instance[name] = {"status": "Missing", "cpu_usage": 0, "memory_usage": 0}
            continue
        state = _state(instance)
        status = instance.get("status") or state.get("status") or ""
        cpu = int((state.get("cpu") or {}).get("usage") or 0)
        memory = int((state.get("memory") or {}).get("usage") or 0)
        rate = samples.rate((project, name), cpu, now)
        if rate is not None:
            rates.append(rate)
        running += status == "Running"
        cpu_total += cpu
        memory_total += memory
        per_instance[name] = {"status": status, "cpu_usage": cpu, "memory_usage": memory,
                              "cpu_cores": None if rate is None else round(rate, 4)}
    return {
        "count": len(names),
        "running": running,
        "cpu_usage": cpu_total,
        "cpu_cores": round(sum(rates), 4) if rates else None,
        "memory_usage": memory_total,
        "instances": per_instance,
    }
