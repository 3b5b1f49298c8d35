"""The governor interface library from both sides, with small dummy charms.

The requirer is a dummy governor charm that records the library's events; the provider
is a dummy service charm that grants every complete request (or refuses a deployment it
does not know). Databags are empty, partial, wrong or from a newer library.
"""

from __future__ import annotations

import ops
import pytest
from ops import testing

from charms.lxd_deployments.v0 import governor as lib
from charms.lxd_deployments.v0.governor import (
    DeploymentAccess,
    Endpoint,
    GovernorProvider,
    GovernorRequirer,
    Grant,
)
from lxd_deployments_charm.certs import make_client_pair

GOVERNOR = make_client_pair("governor")
SERVER = make_client_pair("server")


class DummyGovernorCharm(ops.CharmBase):
    """A governor charm: asks for web/rw with its certificate, records what it is told."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.deployments = GovernorRequirer(self, relation_name="deployments")
        self.seen: list[tuple[str, object]] = []
        framework.observe(self.on.deployments_relation_created, self._request)
        framework.observe(self.on.config_changed, self._request)
        framework.observe(self.deployments.on.access_ready, self._on_ready)
        framework.observe(self.deployments.on.access_error, self._on_error)
        framework.observe(self.deployments.on.access_revoked, self._on_revoked)

    def _request(self, _: ops.EventBase) -> None:
        self.deployments.request_access(deployment="web", certificate=GOVERNOR.certificate,
                                        role="rw", webhook_url="https://governor/hook")

    def _on_ready(self, event: lib.AccessReadyEvent) -> None:
        self.seen.append(("ready", event.access))

    def _on_error(self, event: lib.AccessErrorEvent) -> None:
        self.seen.append(("error", event.message))

    def _on_revoked(self, event: lib.AccessRevokedEvent) -> None:
        self.seen.append(("revoked", event.relation_id))


class DummyProviderCharm(ops.CharmBase):
    """A deployments service: knows deployment `web` only."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.governors = GovernorProvider(self, relation_name="governor")
        self.removed: list[tuple[int, Grant | None]] = []
        framework.observe(self.governors.on.governor_changed, self._reconcile)
        framework.observe(self.governors.on.governor_removed, self._on_removed)

    def _reconcile(self, _: ops.EventBase) -> None:
        for request in self.governors.requests():
            if request.problem:
                self.governors.publish_error(request.relation_id, request.problem)
            elif not request.is_complete:
                self.governors.withdraw(request.relation_id)
            elif request.deployment != "web":
                self.governors.publish_error(
                    request.relation_id, f'unknown deployment "{request.deployment}"')
            else:
                self.governors.publish_grant(request.relation_id, Grant(
                    deployment=request.deployment, project=request.project,
                    key_name=request.key_name, role=request.role,
                    certificate_fingerprint=request.certificate_fingerprint or "",
                    endpoint="https://10.0.0.1:8444",
                    server_certificate=SERVER.certificate))

    def _on_removed(self, event: lib.GovernorRemovedEvent) -> None:
        self.removed.append((event.relation_id, event.grant))


GOVERNOR_META = {"name": "governor", "requires": {
    "deployments": {"interface": lib.INTERFACE_NAME, "limit": 1}}}
PROVIDER_META = {"name": "lxd-deployments", "provides": {
    "governor": {"interface": lib.INTERFACE_NAME}}}


@pytest.fixture
def governor_ctx() -> testing.Context:
    return testing.Context(DummyGovernorCharm, meta=GOVERNOR_META)


@pytest.fixture
def provider_ctx() -> testing.Context:
    return testing.Context(DummyProviderCharm, meta=PROVIDER_META)


# Juju puts these in every unit databag; they are not the library's.
JUJU_KEYS = ("egress-subnets", "ingress-address", "private-address")


def _ours(unit_data) -> dict[str, str]:
    return {k: v for k, v in unit_data.items() if k not in JUJU_KEYS}


REQUEST = {"certificate": GOVERNOR.certificate, "deployment": "web", "role": "rw"}


def _grant_data(relation_id: int, **changes) -> dict[str, str]:
    return {"deployment": "web", "project": "default",
            "key_name": f"juju-relation-{relation_id}", "role": "rw",
            "certificate_fingerprint": GOVERNOR.fingerprint, **changes}


def _unit_data(relation_id: int, **changes) -> dict[str, str]:
    return {**_grant_data(relation_id), "endpoint": "https://10.0.0.1:8444",
            "server_certificate": SERVER.certificate, **changes}


# --- the requirer ------------------------------------------------------------------------


def test_the_governor_publishes_its_certificate_only(governor_ctx):
    relation = testing.Relation("deployments", remote_app_name="deployments-offer")

    state_out = governor_ctx.run(governor_ctx.on.relation_created(relation),
                                 testing.State(leader=True, relations={relation}))

    data = state_out.get_relation(relation.id).local_app_data
    assert data == {"certificate": GOVERNOR.certificate, "deployment": "web",
                    "project": "default", "role": "rw",
                    "webhook_url": "https://governor/hook"}
    assert "PRIVATE KEY" not in str(data)


def test_a_non_leader_governor_writes_nothing(governor_ctx):
    relation = testing.Relation("deployments")

    state_out = governor_ctx.run(governor_ctx.on.relation_created(relation),
                                 testing.State(leader=False, relations={relation}))

    assert state_out.get_relation(relation.id).local_app_data == {}


def test_the_library_refuses_to_publish_a_private_key(governor_ctx):
    relation = testing.Relation("deployments")
    with governor_ctx(governor_ctx.on.update_status(),
                      testing.State(leader=True, relations={relation})) as manager:
        with pytest.raises(ValueError, match="holds a private key"):
            manager.charm.deployments.request_access("web", GOVERNOR.private_key)
        manager.run()


def test_access_ready_carries_the_key_and_endpoints(governor_ctx):
    relation = testing.Relation(
        "deployments", local_app_data=REQUEST, remote_app_data=_grant_data(7),
        remote_units_data={0: _unit_data(7), 1: _unit_data(7, endpoint="https://10.0.0.2:8444")},
        id=7)

    with governor_ctx(governor_ctx.on.relation_changed(relation, remote_unit=0),
                      testing.State(leader=True, relations={relation})) as manager:
        manager.run()
        seen = manager.charm.seen

    ((kind, access),) = seen
    assert kind == "ready"
    assert access == DeploymentAccess(
        relation_id=7, deployment="web", project="default", key_name="juju-relation-7",
        role="rw", certificate_fingerprint=GOVERNOR.fingerprint,
        endpoints=(Endpoint("https://10.0.0.1:8444", SERVER.certificate),
                   Endpoint("https://10.0.0.2:8444", SERVER.certificate)))
    assert access.is_ready


def test_a_refused_request_raises_access_error(governor_ctx):
    relation = testing.Relation("deployments", local_app_data=REQUEST,
                                remote_app_data={"error": 'unknown deployment "web"'})

    with governor_ctx(governor_ctx.on.relation_changed(relation, remote_unit=0),
                      testing.State(leader=True, relations={relation})) as manager:
        manager.run()
        assert manager.charm.seen == [("error", 'unknown deployment "web"')]


@pytest.mark.parametrize(("app", "units"), [
    ({}, {}),                                                  # nothing yet
    ({"key_name": "juju-relation-3"}, {}),                     # no unit has served it
    (_grant_data(3), {0: {"endpoint": "https://x"}}),          # a unit without the key
    (_grant_data(3), {0: _unit_data(3, certificate_fingerprint="00")}),  # an old key
    (_grant_data(3, certificate_fingerprint="00"), {0: _unit_data(3)}),  # an old cert
])
def test_empty_or_partial_provider_data_is_not_ready(governor_ctx, app, units):
    relation = testing.Relation("deployments", id=3, local_app_data=REQUEST,
                                remote_app_data=app, remote_units_data=units)

    with governor_ctx(governor_ctx.on.relation_changed(relation, remote_unit=0),
                      testing.State(leader=True, relations={relation})) as manager:
        manager.run()
        assert manager.charm.seen == []
        access = manager.charm.deployments.access()
        assert access is not None and not access.is_ready


def test_unknown_keys_from_a_newer_provider_are_ignored(governor_ctx):
    relation = testing.Relation(
        "deployments", id=4, local_app_data=REQUEST,
        remote_app_data={**_grant_data(4), "future_field": "x"},
        remote_units_data={0: {**_unit_data(4), "zone": "a"}})

    with governor_ctx(governor_ctx.on.relation_changed(relation, remote_unit=0),
                      testing.State(leader=True, relations={relation})) as manager:
        manager.run()
        assert [kind for kind, _ in manager.charm.seen] == ["ready"]


def test_access_is_none_without_a_relation(governor_ctx):
    with governor_ctx(governor_ctx.on.update_status(), testing.State()) as manager:
        manager.run()
        assert manager.charm.deployments.access() is None


def test_relation_broken_raises_access_revoked(governor_ctx):
    relation = testing.Relation("deployments", id=5)

    with governor_ctx(governor_ctx.on.relation_broken(relation),
                      testing.State(leader=True, relations={relation})) as manager:
        manager.run()
        assert manager.charm.seen == [("revoked", 5)]


def test_a_deferred_ready_event_keeps_its_access():
    access = DeploymentAccess(1, "web", "default", "juju-relation-1", "rw", "ab",
                              (Endpoint("https://x", "pem"),))
    event = lib.AccessReadyEvent(ops.Handle(None, "ev", "1"), 1, access)
    restored = lib.AccessReadyEvent(ops.Handle(None, "ev", "2"), 0)

    restored.restore(event.snapshot())

    assert restored.access == access and restored.relation_id == 1


# --- the provider -------------------------------------------------------------------------


def test_the_provider_grants_a_complete_request(provider_ctx):
    relation = testing.Relation("governor", id=9, remote_app_name="alias-in-offer",
                                remote_app_data=REQUEST)

    state_out = provider_ctx.run(provider_ctx.on.relation_changed(relation),
                                 testing.State(leader=True, relations={relation}))

    out = state_out.get_relation(9)
    assert out.local_app_data == _grant_data(9)
    assert _ours(out.local_unit_data) == _unit_data(9)
    assert "alias-in-offer" not in str(out.local_app_data)


def test_a_non_leader_provider_writes_its_unit_data_only(provider_ctx):
    relation = testing.Relation("governor", id=9, remote_app_data=REQUEST)

    state_out = provider_ctx.run(provider_ctx.on.relation_changed(relation),
                                 testing.State(leader=False, relations={relation}))

    assert state_out.get_relation(9).local_app_data == {}
    assert _ours(state_out.get_relation(9).local_unit_data) == _unit_data(9)


@pytest.mark.parametrize("data", [{}, {"deployment": "web"},
                                  {"certificate": GOVERNOR.certificate},
                                  {"role": "ro", "project": "p1"}])
def test_an_empty_or_partial_request_is_not_complete(provider_ctx, data):
    relation = testing.Relation("governor", remote_app_data=data)

    with provider_ctx(provider_ctx.on.relation_changed(relation),
                      testing.State(leader=True, relations={relation})) as manager:
        state_out = manager.run()
        (request,) = manager.charm.governors.requests()

    assert not request.is_complete and request.problem is None
    assert state_out.get_relation(relation.id).local_app_data == {}


@pytest.mark.parametrize(("data", "problem"), [
    ({**REQUEST, "role": "root"}, "invalid request: role: Input should be 'rw' or 'ro'"),
    ({**REQUEST, "certificate": GOVERNOR.private_key + GOVERNOR.certificate},
     "invalid request: certificate: holds a private key: publish the certificate only"),
    ({**REQUEST, "certificate": "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"},
     "invalid request: certificate: is not a PEM certificate"),
])
def test_bad_request_data_is_published_as_an_error(provider_ctx, data, problem):
    relation = testing.Relation("governor", remote_app_data=data)

    state_out = provider_ctx.run(provider_ctx.on.relation_changed(relation),
                                 testing.State(leader=True, relations={relation}))

    assert state_out.get_relation(relation.id).local_app_data == {"error": problem}
    assert _ours(state_out.get_relation(relation.id).local_unit_data) == {"error": problem}


def test_unknown_request_keys_are_ignored(provider_ctx):
    relation = testing.Relation("governor", id=2, remote_app_data={**REQUEST, "extra": "1"})

    state_out = provider_ctx.run(provider_ctx.on.relation_changed(relation),
                                 testing.State(leader=True, relations={relation}))

    assert state_out.get_relation(2).local_app_data == _grant_data(2)


def test_an_error_replaces_an_earlier_grant(provider_ctx):
    relation = testing.Relation("governor", id=2, remote_app_data={**REQUEST,
                                                                   "deployment": "shop"},
                                local_app_data=_grant_data(2), local_unit_data=_unit_data(2))

    state_out = provider_ctx.run(provider_ctx.on.relation_changed(relation),
                                 testing.State(leader=True, relations={relation}))

    refused = {"error": 'unknown deployment "shop"'}
    assert state_out.get_relation(2).local_app_data == refused
    assert _ours(state_out.get_relation(2).local_unit_data) == refused


def test_relation_broken_hands_over_what_this_unit_granted(provider_ctx):
    relation = testing.Relation("governor", id=6, remote_app_data=REQUEST,
                                local_unit_data=_unit_data(6))

    with provider_ctx(provider_ctx.on.relation_broken(relation),
                      testing.State(leader=False, relations={relation})) as manager:
        manager.run()
        ((relation_id, grant),) = manager.charm.removed

    assert relation_id == 6
    assert grant == Grant(deployment="web", project="default", key_name="juju-relation-6",
                          role="rw", certificate_fingerprint=GOVERNOR.fingerprint,
                          endpoint="https://10.0.0.1:8444",
                          server_certificate=SERVER.certificate)


def test_relation_broken_before_any_grant_has_nothing_to_revoke(provider_ctx):
    relation = testing.Relation("governor", id=6)

    with provider_ctx(provider_ctx.on.relation_broken(relation),
                      testing.State(leader=True, relations={relation})) as manager:
        manager.run()
        assert manager.charm.removed == [(6, None)]


def test_a_deferred_removal_keeps_its_grant():
    grant = Grant("web", "default", "juju-relation-1", "rw", "ab", "https://x", None)
    event = lib.GovernorRemovedEvent(ops.Handle(None, "ev", "1"), 1, grant)
    restored = lib.GovernorRemovedEvent(ops.Handle(None, "ev", "2"), 0)

    restored.restore(event.snapshot())

    assert restored.grant == grant


def test_both_sides_end_to_end(provider_ctx, governor_ctx):
    """The governor's databag goes to the provider; the provider's comes back."""
    to_provider = testing.Relation("deployments", id=11)
    governor_out = governor_ctx.run(governor_ctx.on.relation_created(to_provider),
                                    testing.State(leader=True, relations={to_provider}))
    request = governor_out.get_relation(11).local_app_data

    from_governor = testing.Relation("governor", id=11, remote_app_data=request)
    provider_out = provider_ctx.run(provider_ctx.on.relation_changed(from_governor),
                                    testing.State(leader=True, relations={from_governor}))
    answer = provider_out.get_relation(11)

    back = testing.Relation("deployments", id=11, local_app_data=request,
                            remote_app_data=answer.local_app_data,
                            remote_units_data={0: answer.local_unit_data})
    with governor_ctx(governor_ctx.on.relation_changed(back, remote_unit=0),
                      testing.State(leader=True, relations={back})) as manager:
        manager.run()
        ((kind, access),) = manager.charm.seen

    assert kind == "ready"
    assert access.key_name == lib.key_name_for(11)
    assert access.endpoints[0].url == "https://10.0.0.1:8444"
