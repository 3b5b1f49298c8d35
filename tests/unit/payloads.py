"""Small payloads of each event type, for tests that publish by hand."""

from __future__ import annotations

from lxd_deployments.core import events as ev


def scale_request(count: int = 2, shape: str = "front") -> ev.ScaleRequest:
    return ev.ScaleRequest(shape=shape, count=count, current=0, minimum=0, maximum=4,
                           cause="admin", reason="a test",
                           shape_url=f"/1.0/deployments/web/shapes/{shape}")


def metrics() -> ev.Metrics:
    return ev.Metrics(interval=60.0, shapes={})


def capacity_offer() -> ev.CapacityOffer:
    return ev.CapacityOffer(shapes={}, host={})


def instance_deleted(name: str = "c1") -> ev.InstanceDeleted:
    return ev.InstanceDeleted(shape="front", instance=name, origin="service",
                              scaling_current=0,
                              instance_url=f"/1.0/deployments/web/shapes/front/instances/{name}",
                              lxd_instance_url=f"/1.0/instances/{name}")


BY_TYPE = {ev.SCALE_REQUEST: scale_request, ev.METRICS: metrics,
           ev.CAPACITY_OFFER: capacity_offer, ev.INSTANCE_DELETED: instance_deleted}
