"""The `lxd-deployments-governor` interface: a governor charm asks for a deployment key.

A *governor* is the controller of an application that scales itself on LXD through the
LXD Deployments API. This library is both sides of the relation between a governor charm
(the requirer) and the `lxd-deployments` charm (the provider).

Only public data crosses the relation: the governor's certificate, the names it asks for,
the service's endpoints and its server certificate. A governor's private key never leaves
its own unit, and the provider never names anything after the remote application (across
models that name is an alias the offering side chose): the key it creates is named from
the relation id.

What the requirer (the governor's leader) publishes, in its application databag:

    certificate   the PEM certificate the governor authenticates with (mTLS, or JWT `kid`)
    deployment    the deployment it governs
    project       the LXD project of that deployment (default: "default")
    role          "rw" (launch and delete instances) or "ro" (read only); default "rw"
    webhook_url   optional: where the service should POST the deployment's events

What the provider publishes: its leader, in the application databag, the request's
outcome (`deployment`, `project`, `key_name`, `role`, `certificate_fingerprint`, or
`error` saying what is wrong with the request: an unknown deployment, a bad certificate);
every provider unit, in its unit databag, the `endpoint` of its service (an https:// URL)
and the `server_certificate` to pin, with the same outcome fields for its own service.

Using it in a governor charm (the requirer)::

    # charmcraft.yaml: requires: {deployments: {interface: lxd-deployments-governor, limit: 1}}
    from charms.lxd_deployments.v0.governor import GovernorRequirer

    class MyGovernorCharm(ops.CharmBase):
        def __init__(self, framework):
            super().__init__(framework)
            self.deployments = GovernorRequirer(self, relation_name="deployments")
            framework.observe(self.on.deployments_relation_created, self._reconcile)
            framework.observe(self.on.config_changed, self._reconcile)
            framework.observe(self.deployments.on.access_ready, self._on_access_ready)
            framework.observe(self.deployments.on.access_error, self._on_access_error)
            framework.observe(self.deployments.on.access_revoked, self._on_access_revoked)

        def _reconcile(self, _):
            # The certificate only: the private key stays on this unit.
            self.deployments.request_access(
                deployment="web", certificate=my_certificate_pem, role="rw")

        def _on_access_ready(self, event):
            access = event.access          # DeploymentAccess: key_name, endpoints, ...
            url, server_pem = access.endpoints[0].url, access.endpoints[0].server_certificate
            # now call POST {url}/1.0/deployments/web/shapes/{shape}/instances with mTLS

        def _on_access_error(self, event):
            self.unit.status = ops.BlockedStatus(f"deployments: {event.message}")

Using it in the provider (the `lxd-deployments` charm does this)::

    from charms.lxd_deployments.v0.governor import Grant, GovernorProvider

    self.governors = GovernorProvider(self, relation_name="governor")
    framework.observe(self.governors.on.governor_changed, self._reconcile)
    framework.observe(self.governors.on.governor_removed, self._on_governor_removed)

    for request in self.governors.requests():           # one per relation, parsed
        if request.problem:                               # the databag could not be used
            self.governors.publish_error(request.relation_id, request.problem)
            continue
        if not request.is_complete:                       # still waiting for the governor
            continue
        ...create request.key_name for request.certificate in the service...
        self.governors.publish_grant(request.relation_id, Grant(...))

Both databags are read with models whose every field is optional and which ignore
unknown keys, so an empty, partial or newer databag never breaks either side; a value of
the wrong kind is reported (`request.problem`, `access.error`) instead of raised.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import ops
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

# The unique Charmhub library identifier, never change it.
LIBID = "6f2d0c1e6b7a4c7fb0d2d8a4c1e9f3a5"
# Increase this major API version when introducing breaking changes.
LIBAPI = 0
# Increase this PATCH version before publishing a change; reset it when LIBAPI changes.
LIBPATCH = 2
# Python packages this library needs besides ops (charmcraft installs them in the charm).
PYDEPS = ["pydantic>=2"]

logger = logging.getLogger(__name__)

# The interface name both sides declare in their metadata.
INTERFACE_NAME = "lxd-deployments-governor"
# Deployment keys created for relations are named with this prefix and the relation id.
KEY_NAME_PREFIX = "juju-relation-"
DEFAULT_PROJECT = "default"
DEFAULT_ROLE = "rw"

_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def key_name_for(relation_id: int) -> str:
    """The deployment key name for a relation: from its id, never from the remote app name."""
    return f"{KEY_NAME_PREFIX}{relation_id}"


def certificate_fingerprint(pem: str) -> str:
    """SHA-256 of the certificate's DER encoding, in hex (LXD's and the service's form)."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")).hexdigest()


# --- databags: private models, every field optional, unknown keys ignored ------------------


class _Databag(BaseModel):
    """A relation databag: string values only, unknown keys ignored, nothing required."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def read(cls, databag: Mapping[str, str]) -> _Databag:
        """Parse a databag; raises DatabagError with one line naming every bad key."""
        try:
            return cls.model_validate({k: v for k, v in databag.items() if v != ""})
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'databag'}: "
                f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())
            raise DatabagError(problems) from err

    def write(self, databag: ops.RelationDataContent) -> None:
        """Replace this model's keys in `databag` (unset fields are removed)."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or value == "":
                databag.pop(name, None)
            else:
                databag[name] = str(value)


class DatabagError(ValueError):
    """A databag holds a value of the wrong kind; the message names the keys."""


class _RequestData(_Databag):
    """What the governor's leader writes in its application databag."""

    certificate: str | None = None
    deployment: str | None = None
    project: str | None = None
    role: Literal["rw", "ro"] | None = None
    webhook_url: str | None = None

    @field_validator("certificate")
    @classmethod
    def _only_a_certificate(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "PRIVATE KEY" in value:
            raise ValueError("holds a private key: publish the certificate only")
        if not _PEM_CERTIFICATE.search(value):
            raise ValueError("is not a PEM certificate")
        try:
            certificate_fingerprint(value)
        except ValueError as err:
            raise ValueError(f"is not a valid PEM certificate ({err})") from err
        return value.strip() + "\n"

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class _GrantData(_Databag):
    """The outcome of a request, in the provider's app databag (leader) and unit databags."""

    deployment: str | None = None
    project: str | None = None
    key_name: str | None = None
    role: str | None = None
    certificate_fingerprint: str | None = None
    error: str | None = None


class _UnitGrantData(_GrantData):
    """A provider unit's databag: the outcome in its own service, and how to reach it."""

    endpoint: str | None = None
    server_certificate: str | None = None


# --- public, frozen types -------------------------------------------------------------


@dataclass(frozen=True)
class GovernorRequest:
    """A governor's request as the provider sees it (one per relation).

    `problem` says why the databag cannot be used (a bad value); otherwise `is_complete`
    says whether the governor has published what a key needs (certificate, deployment).
    """

    relation_id: int
    key_name: str
    certificate: str | None = None
    deployment: str | None = None
    project: str = DEFAULT_PROJECT
    role: str = DEFAULT_ROLE
    webhook_url: str | None = None
    problem: str | None = None

    @property
    def is_complete(self) -> bool:
        return self.problem is None and bool(self.certificate) and bool(self.deployment)

    @property
    def certificate_fingerprint(self) -> str | None:
        return certificate_fingerprint(self.certificate) if self.certificate else None


@dataclass(frozen=True)
class Grant:
    """What a provider unit made for a request, published back to the governor."""

    deployment: str
    project: str
    key_name: str
    role: str
    certificate_fingerprint: str
    endpoint: str | None = None
    server_certificate: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One provider unit's service: where to connect and which certificate to pin."""

    url: str
    server_certificate: str | None = None


@dataclass(frozen=True)
class DeploymentAccess:
    """What the governor got: its key, and the endpoints where the key works.

    `error` is set when the provider refused the request (the governor should say so,
    fix its request, or wait for the admin); `endpoints` lists only units whose service
    holds the key for the governor's current certificate.
    """

    relation_id: int
    deployment: str | None = None
    project: str = DEFAULT_PROJECT
    key_name: str | None = None
    role: str | None = None
    certificate_fingerprint: str | None = None
    endpoints: tuple[Endpoint, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def is_ready(self) -> bool:
        return self.error is None and bool(self.key_name) and bool(self.endpoints)


# --- events ---------------------------------------------------------------------------


class _RelationEvent(ops.EventBase):
    """An event about one relation; survives a defer (snapshot/restore by relation id)."""

    def __init__(self, handle: ops.Handle, relation_id: int) -> None:
        super().__init__(handle)
        self.relation_id = relation_id

    def snapshot(self) -> dict[str, Any]:
        return {"relation_id": self.relation_id}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.relation_id = snapshot["relation_id"]


class GovernorChangedEvent(_RelationEvent):
    """A governor published or changed its request (or a relation to one was joined)."""


class GovernorRemovedEvent(_RelationEvent):
    """A governor's relation is gone: revoke what `grant` says this unit made for it."""

    def __init__(self, handle: ops.Handle, relation_id: int, grant: Grant | None = None
                 ) -> None:
        super().__init__(handle, relation_id)
        self.grant = grant

    def snapshot(self) -> dict[str, Any]:
        grant = None if self.grant is None else self.grant.__dict__.copy()
        return {"relation_id": self.relation_id, "grant": grant}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.relation_id = snapshot["relation_id"]
        grant = snapshot.get("grant")
        self.grant = None if grant is None else Grant(**grant)


class GovernorProviderEvents(ops.ObjectEvents):
    governor_changed = ops.EventSource(GovernorChangedEvent)
    governor_removed = ops.EventSource(GovernorRemovedEvent)


class AccessReadyEvent(_RelationEvent):
    """The key exists and at least one endpoint serves it: `access` says where."""

    def __init__(self, handle: ops.Handle, relation_id: int,
                 access: DeploymentAccess | None = None) -> None:
        super().__init__(handle, relation_id)
        self.access = access

    def snapshot(self) -> dict[str, Any]:
        access = None
        if self.access is not None:
            access = {**self.access.__dict__,
                      "endpoints": [e.__dict__ for e in self.access.endpoints]}
        return {"relation_id": self.relation_id, "access": access}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.relation_id = snapshot["relation_id"]
        data = snapshot.get("access")
        if data is None:
            self.access = None
        else:
            endpoints = tuple(Endpoint(**e) for e in data.pop("endpoints"))
            self.access = DeploymentAccess(**data, endpoints=endpoints)


class AccessErrorEvent(_RelationEvent):
    """The provider refused the request; `message` says why."""

    def __init__(self, handle: ops.Handle, relation_id: int, message: str = "") -> None:
        super().__init__(handle, relation_id)
        self.message = message

    def snapshot(self) -> dict[str, Any]:
        return {"relation_id": self.relation_id, "message": self.message}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.relation_id = snapshot["relation_id"]
        self.message = snapshot["message"]


class AccessRevokedEvent(_RelationEvent):
    """The relation is gone: the key no longer works."""


class GovernorRequirerEvents(ops.ObjectEvents):
    access_ready = ops.EventSource(AccessReadyEvent)
    access_error = ops.EventSource(AccessErrorEvent)
    access_revoked = ops.EventSource(AccessRevokedEvent)


# --- the provider (the lxd-deployments charm) ---------------------------------------------


class GovernorProvider(ops.Object):
    """The service side: reads governors' requests, publishes grants and errors."""

    on = GovernorProviderEvents()  # type: ignore[reportAssignmentType]

    def __init__(self, charm: ops.CharmBase, relation_name: str = "governor") -> None:
        super().__init__(charm, relation_name)
        self._charm = charm
        self._relation_name = relation_name
        events = charm.on[relation_name]
        for source in (events.relation_joined, events.relation_changed):
            self.framework.observe(source, self._on_changed)
        self.framework.observe(events.relation_broken, self._on_broken)

    @property
    def relations(self) -> list[ops.Relation]:
        return list(self.model.relations[self._relation_name])

    def _on_changed(self, event: ops.RelationEvent) -> None:
        self.on.governor_changed.emit(event.relation.id)

    def _on_broken(self, event: ops.RelationBrokenEvent) -> None:
        self.on.governor_removed.emit(event.relation.id, self.provisioned(event.relation))

    def request(self, relation: ops.Relation) -> GovernorRequest:
        """The governor's request on `relation`, parsed (never raises on bad data)."""
        key_name = key_name_for(relation.id)
        if relation.app is None:
            return GovernorRequest(relation.id, key_name)
        try:
            data = _RequestData.read(relation.data[relation.app])
        except DatabagError as err:
            return GovernorRequest(relation.id, key_name, problem=f"invalid request: {err}")
        assert isinstance(data, _RequestData)
        return GovernorRequest(
            relation_id=relation.id, key_name=key_name, certificate=data.certificate,
            deployment=data.deployment, project=data.project or DEFAULT_PROJECT,
            role=data.role or DEFAULT_ROLE, webhook_url=data.webhook_url)

    def requests(self) -> list[GovernorRequest]:
        """Every live relation's request, in relation id order."""
        return [self.request(r) for r in sorted(self.relations, key=lambda r: r.id)]

    def provisioned(self, relation: ops.Relation) -> Grant | None:
        """What this unit published as made for `relation` (read from its own databag)."""
        try:
            data = _UnitGrantData.read(relation.data[self._charm.unit])
        except (DatabagError, ops.RelationDataError):
            return None
        assert isinstance(data, _UnitGrantData)
        if not (data.key_name and data.deployment and data.certificate_fingerprint):
            return None
        return Grant(deployment=data.deployment, project=data.project or DEFAULT_PROJECT,
                     key_name=data.key_name, role=data.role or DEFAULT_ROLE,
                     certificate_fingerprint=data.certificate_fingerprint,
                     endpoint=data.endpoint, server_certificate=data.server_certificate)

    def _relation(self, relation_id: int) -> ops.Relation | None:
        return self.model.get_relation(self._relation_name, relation_id)

    def publish_grant(self, relation_id: int, grant: Grant) -> None:
        """Publish what was made: this unit's databag always, the app databag if leader."""
        relation = self._relation(relation_id)
        if relation is None:
            return
        outcome = dict(deployment=grant.deployment, project=grant.project,
                       key_name=grant.key_name, role=grant.role,
                       certificate_fingerprint=grant.certificate_fingerprint)
        _UnitGrantData(**outcome, endpoint=grant.endpoint,
                       server_certificate=grant.server_certificate
                       ).write(relation.data[self._charm.unit])
        if self._charm.unit.is_leader():
            _GrantData(**outcome).write(relation.data[self._charm.app])

    def publish_error(self, relation_id: int, message: str, *,
                      endpoint: str | None = None, server_certificate: str | None = None
                      ) -> None:
        """Publish why a request was refused (and withdraw any earlier grant)."""
        relation = self._relation(relation_id)
        if relation is None:
            return
        _UnitGrantData(error=message, endpoint=endpoint,
                       server_certificate=server_certificate
                       ).write(relation.data[self._charm.unit])
        if self._charm.unit.is_leader():
            _GrantData(error=message).write(relation.data[self._charm.app])

    def publish_for_another_unit(self, relation_id: int, grant: Grant | None = None,
                                 error: str | None = None) -> None:
        """Another unit's service serves this relation, not this one's: clear this unit's
        outcome and, as the leader (the only unit that writes the application's answer),
        publish `grant` (its endpoint is the serving unit's own, in its databag) or
        `error`; neither: nothing granted yet."""
        relation = self._relation(relation_id)
        if relation is None:
            return
        _UnitGrantData().write(relation.data[self._charm.unit])
        if not self._charm.unit.is_leader():
            return
        if grant is not None:
            _GrantData(deployment=grant.deployment, project=grant.project,
                       key_name=grant.key_name, role=grant.role,
                       certificate_fingerprint=grant.certificate_fingerprint
                       ).write(relation.data[self._charm.app])
        else:
            _GrantData(error=error).write(relation.data[self._charm.app])

    def withdraw(self, relation_id: int) -> None:
        """Clear this unit's outcome (and the app's, if leader): nothing is granted."""
        relation = self._relation(relation_id)
        if relation is None:
            return
        _UnitGrantData().write(relation.data[self._charm.unit])
        if self._charm.unit.is_leader():
            _GrantData().write(relation.data[self._charm.app])


# --- the requirer (a governor charm) ------------------------------------------------------


class GovernorRequirer(ops.Object):
    """The governor side: publishes the request, reports the key and endpoints it got."""

    on = GovernorRequirerEvents()  # type: ignore[reportAssignmentType]

    def __init__(self, charm: ops.CharmBase, relation_name: str = "deployments") -> None:
        super().__init__(charm, relation_name)
        self._charm = charm
        self._relation_name = relation_name
        events = charm.on[relation_name]
        for source in (events.relation_joined, events.relation_changed,
                       events.relation_departed):
            self.framework.observe(source, self._on_changed)
        self.framework.observe(events.relation_broken, self._on_broken)

    @property
    def relations(self) -> list[ops.Relation]:
        return list(self.model.relations[self._relation_name])

    def request_access(self, deployment: str, certificate: str, *, role: str = DEFAULT_ROLE,
                       project: str = DEFAULT_PROJECT, webhook_url: str | None = None,
                       relation_id: int | None = None) -> None:
        """Publish the request on every relation (or one); only the leader writes.

        `certificate` is the PEM certificate only: a private key is refused (ValueError).
        """
        data = _RequestData.model_validate(dict(
            certificate=certificate, deployment=deployment, project=project, role=role,
            webhook_url=webhook_url))
        if not self._charm.unit.is_leader():
            return
        for relation in self.relations:
            if relation_id is None or relation.id == relation_id:
                data.write(relation.data[self._charm.app])

    def withdraw_request(self) -> None:
        """Remove the request from every relation (leader only)."""
        if not self._charm.unit.is_leader():
            return
        for relation in self.relations:
            _RequestData().write(relation.data[self._charm.app])

    def access(self, relation: ops.Relation | None = None) -> DeploymentAccess | None:
        """What the provider granted on `relation` (default: the only one), or None."""
        if relation is None:
            relations = self.relations
            if not relations:
                return None
            relation = relations[0]
        return _access_of(relation, self._own_fingerprint(relation),
                          self._unit_bags(relation))

    def _own_fingerprint(self, relation: ops.Relation) -> str | None:
        if not self._charm.unit.is_leader():
            return None  # only the leader may read its own app databag
        try:
            data = _RequestData.read(relation.data[self._charm.app])
        except DatabagError:
            return None
        assert isinstance(data, _RequestData)
        return certificate_fingerprint(data.certificate) if data.certificate else None

    @staticmethod
    def _unit_bags(relation: ops.Relation) -> list[Mapping[str, str]]:
        return [relation.data[unit] for unit in sorted(relation.units, key=lambda u: u.name)]

    def _on_changed(self, event: ops.RelationEvent) -> None:
        access = self.access(event.relation)
        if access is None:
            return
        if access.error:
            self.on.access_error.emit(event.relation.id, access.error)
        elif access.is_ready:
            self.on.access_ready.emit(event.relation.id, access)

    def _on_broken(self, event: ops.RelationBrokenEvent) -> None:
        self.on.access_revoked.emit(event.relation.id)


def _access_of(relation: ops.Relation, own_fingerprint: str | None,
               unit_bags: Iterable[Mapping[str, str]]) -> DeploymentAccess:
    """Combine the provider's app databag and its units' databags into one answer."""
    app_bag: Mapping[str, str] = relation.data[relation.app] if relation.app else {}
    try:
        grant = _GrantData.read(app_bag)
    except DatabagError as err:
        return DeploymentAccess(relation.id, error=f"invalid provider data: {err}")
    assert isinstance(grant, _GrantData)
    if grant.error:
        return DeploymentAccess(relation.id, deployment=grant.deployment, error=grant.error)
    fingerprint = grant.certificate_fingerprint
    stale = own_fingerprint is not None and fingerprint not in (None, own_fingerprint)
    endpoints = []
    for bag in unit_bags:
        try:
            unit = _UnitGrantData.read(bag)
        except DatabagError as err:
            logger.warning("ignoring a provider unit's databag: %s", err)
            continue
        assert isinstance(unit, _UnitGrantData)
        if (unit.endpoint and not unit.error and unit.key_name == grant.key_name
                and unit.certificate_fingerprint == fingerprint):
            endpoints.append(Endpoint(unit.endpoint, unit.server_certificate))
    return DeploymentAccess(
        relation_id=relation.id, deployment=grant.deployment,
        project=grant.project or DEFAULT_PROJECT, key_name=None if stale else grant.key_name,
        role=grant.role, certificate_fingerprint=fingerprint,
        endpoints=() if stale else tuple(endpoints))
