#!/usr/bin/env python3
"""The lxd-deployments machine charm: runs the Deployments API service next to LXD.

This module only decides *when*: every event runs one `_reconcile()`, and the status is
set in one place (`collect-status`). *How* lives in `lxd_deployments_charm` (no ops
there): install, render, systemd, the service's REST API, the `deployments` option,
governors' keys, actions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ops
from cosl import JujuTopology

from charms.lxd_deployments.v0.governor import GovernorProvider, GovernorRemovedEvent, Grant
from lxd_deployments_charm import (
    actions,
    cluster,
    cos_agent,
    deployments,
    governors,
    install,
    lxd_access,
    postgresql,
    render,
    store_move,
    systemd,
)
from lxd_deployments_charm.certs import KeyPair, fingerprint, make_client_pair
from lxd_deployments_charm.errors import BlockedError, CharmError, WaitingError
from lxd_deployments_charm.options import (
    CharmOptions,
    DeploymentsSpec,
    check_projects,
    parse_deployments,
    parse_options,
)
from lxd_deployments_charm.paths import SERVICE_NAME, Paths
from lxd_deployments_charm.service import ClientError, Service, connect

logger = logging.getLogger(__name__)
# The HTTP client logs every request at debug level: juju-log is for the charm's words.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)

PATHS = Paths()
LXD_RELATION = "lxd"
GOVERNOR_RELATION = "governor"
DATABASE_RELATION = "database"
PEER_RELATION = cluster.PEER_RELATION
COS_AGENT_RELATION = "cos-agent"
# Seconds to wait for the service after a restart, and when it should already be up.
STARTUP_TIMEOUT = 30.0
RUNNING_TIMEOUT = 5.0

_P = TypeVar("_P", bound=actions.Params)


@dataclass(frozen=True)
class StorePlan:
    """Where this unit's service keeps its state, and whether it runs at all.

    `credentials` set: the shared PostgreSQL store; None: the unit's own SQLite store.
    `copy`: the leader copies its SQLite store into PostgreSQL before switching.
    `leads`: this unit reconciles the `deployments` option and makes or revokes governors'
    keys (on the shared store only the leader does; every unit does on its own store).
    `another_serves`: this unit's service does not run, another unit's does (the unit
    holding the SQLite store), so the leader still answers governors for the application.
    """

    run: bool = True
    credentials: postgresql.Credentials | None = None
    copy: bool = False
    leads: bool = True
    another_serves: bool = False

    @property
    def shared(self) -> bool:
        return self.credentials is not None


class CopyFailed(Exception):
    """copy-store refused or failed; the message is the command's."""


class LXDDeploymentsCharm(ops.CharmBase):
    """Install, configure and run the deployments service; serve governors and admins."""

    _stored = ops.StoredState()

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.governors = GovernorProvider(self, GOVERNOR_RELATION)
        # A copy-store that failed for this database URL: not tried again (it stops the
        # service) until the database relation changes.
        self._stored.set_default(copy_failed_url="", copy_failed_message="")
        # What this dispatch found; collect-status turns it into the unit's status.
        self._reconciled = False
        self._issues: list[CharmError] = []
        self._endpoint: str | None = None
        self._database_gone = False
        lxd, peer = self.on[LXD_RELATION], self.on[PEER_RELATION]
        database, cos = self.on[DATABASE_RELATION], self.on[COS_AGENT_RELATION]
        for event in (self.on.install, self.on.start, self.on.config_changed,
                      self.on.update_status, self.on.leader_elected, self.on.secret_changed,
                      lxd.relation_created, lxd.relation_changed, lxd.relation_departed,
                      lxd.relation_broken, peer.relation_created, peer.relation_joined,
                      peer.relation_changed, peer.relation_departed,
                      cos.relation_joined, cos.relation_changed, cos.relation_broken,
                      self.governors.on.governor_changed):
            framework.observe(event, self._on_change)
        for event in (database.relation_created, database.relation_joined,
                      database.relation_changed):
            framework.observe(event, self._on_database_changed)
        framework.observe(database.relation_broken, self._on_database_broken)
        framework.observe(self.on.upgrade_charm, self._on_upgrade_charm)
        framework.observe(self.governors.on.governor_removed, self._on_governor_removed)
        framework.observe(self.on.remove, self._on_remove)
        framework.observe(self.on.collect_unit_status, self._on_collect_status)
        for name, handler in (
                ("create-key", self._on_create_key), ("delete-key", self._on_delete_key),
                ("list-keys", self._on_list_keys), ("scale", self._on_scale),
                ("list-deployments", self._on_list_deployments), ("show", self._on_show),
                ("add-trusted-certificate", self._on_add_trusted_certificate),
                ("remove-trusted-certificate", self._on_remove_trusted_certificate),
                ("force-delete-deployment", self._on_force_delete_deployment),
                ("force-delete-shape", self._on_force_delete_shape)):
            framework.observe(self.on[name].action, handler)

    # --- events ------------------------------------------------------------------------

    def _on_change(self, _: ops.EventBase) -> None:
        self._reconcile()

    def _on_database_changed(self, _: ops.RelationEvent) -> None:
        # New or changed credentials: a copy that failed before may succeed now.
        self._reconcile(retry_copy=True)

    def _on_database_broken(self, _: ops.RelationBrokenEvent) -> None:
        self._database_gone = True
        self._reconcile()

    def _on_upgrade_charm(self, _: ops.UpgradeCharmEvent) -> None:
        # New code, maybe a new store schema: the service migrates its store at start.
        self._reconcile(restart=True)

    def _on_governor_removed(self, event: GovernorRemovedEvent) -> None:
        # The unit whose service holds the application's keys revokes, once: the leader
        # on the shared store, the unit holding the SQLite store before.
        if self._peer_data().moved_to_postgresql:
            revokes = self.unit.is_leader()
        else:
            revokes = self._store_holder() == self.unit.name
        if event.grant is not None and revokes:
            try:
                with connect(PATHS.socket) as service:
                    governors.revoke(service, event.grant)
            except ClientError as err:
                # Not deferred: the key names a relation that no longer exists, and the
                # next reconcile cannot know it; the admin must be told to delete it.
                self._issues.append(BlockedError(
                    f"could not revoke key {event.grant.key_name} of deployment "
                    f"{event.grant.deployment}: {err.message}; delete it with "
                    f"`lxd-deployments key delete {event.grant.deployment} "
                    f"{event.grant.key_name}`"))
        self._reconcile()

    def _on_remove(self, _: ops.RemoveEvent) -> None:
        """Stop the service and delete the charm's files; LXD and its instances stay."""
        systemd.stop(SERVICE_NAME)
        systemd.disable(SERVICE_NAME)
        removed = install.remove_paths(PATHS.owned)
        systemd.daemon_reload()
        logger.info("removed %s", ", ".join(str(p) for p in removed) or "nothing")

    def _on_collect_status(self, event: ops.CollectStatusEvent) -> None:
        if not self._reconciled:
            return  # an action or removal: the status the last reconcile set stays
        for issue in self._issues:
            status = ops.WaitingStatus if isinstance(issue, WaitingError) else ops.BlockedStatus
            event.add_status(status(one_line(issue.message)))
        if not install.is_installed(PATHS.install_dir):
            event.add_status(ops.MaintenanceStatus("installing the service"))
        if self._endpoint:
            event.add_status(ops.ActiveStatus(f"serving {self._endpoint}"))
        else:
            event.add_status(ops.ActiveStatus("serving on the unix socket only (port 0)"))

    # --- the reconcile -----------------------------------------------------------------

    def _reconcile(self, *, restart: bool = False, retry_copy: bool = False) -> None:
        self._reconciled = True
        try:
            options = parse_options(dict(self.config))
            spec, spec_error = self._deployments_spec(options)
            if spec_error is not None:  # the service still runs, and governors are served
                self._issues.append(spec_error)
            identity = self._identity()
            plan = self._store_plan(retry_copy=retry_copy)
            if plan.run and (identity is None or identity.server is None) and (
                    plan.shared or self._unit_count() > 1):
                # Beside other units, a service with an id and certificate of its own
                # would not recognise their instances, nor be trusted by governors.
                plan = StorePlan(run=False, leads=False)
            try:
                restarted = self._ensure_service(options, spec, identity, plan, restart=restart)
            except CopyFailed as err:
                assert plan.credentials is not None
                self._stored.copy_failed_url = plan.credentials.url
                self._stored.copy_failed_message = str(err)
                self._issues.append(self._copy_blocked(str(err)))
                # Back on the unit's SQLite store, which still holds everything.
                plan = StorePlan()
                restarted = self._ensure_service(options, spec, identity, plan, restart=True)
            if not plan.run:
                self._withdraw_governors(another_serves=plan.another_serves)
                self._publish_cos_agent(None, options, identity)
                return
            with connect(PATHS.socket) as service:
                service.wait_ready(STARTUP_TIMEOUT if restarted else RUNNING_TIMEOUT)
                # The new release runs: the old ones are no longer a way back.
                for old in install.prune_releases(PATHS.install_dir):
                    logger.info("removed the old release %s", old.name)
                self._serve_governors(service, options, spec if spec_error is None else None,
                                      identity, plan)
                self._publish_cos_agent(service, options, identity)
        except CharmError as err:
            self._issues.append(err)
        except ClientError as err:
            self._issues.append(WaitingError(
                f"the service does not answer: {err.message} "
                f"(see journalctl -u {SERVICE_NAME})"))

    # --- what the units share: identity (peer relation) and store (database relation) -----

    def _peer_relation(self) -> ops.Relation | None:
        return self.model.get_relation(PEER_RELATION)

    def _peer_data(self) -> cluster.PeerAppData:
        relation = self._peer_relation()
        if relation is None:
            return cluster.PeerAppData()
        return cluster.PeerAppData.read(dict(relation.data[self.app]))

    def _identity(self) -> cluster.Identity | None:
        """The application's service id and server certificate (the leader makes them)."""
        relation = self._peer_relation()
        if relation is None:
            return None
        data = self._peer_data()
        if self.unit.is_leader() and not (data.service_id and data.server_secret):
            updates: dict[str, str] = {}
            if not data.service_id:
                updates["service-id"] = cluster.seed_service_id(PATHS.state_dir)
            if not data.server_secret:
                pair = cluster.seed_server_pair(PATHS.state_dir, self.app.name)
                secret = self.app.add_secret(
                    cluster.secret_content(pair), label=cluster.SERVER_SECRET_LABEL,
                    description="the HTTPS server certificate and key every unit serves")
                updates["server-secret"] = secret.id or ""
            relation.data[self.app].update(updates)
            data = self._peer_data()
        if not data.service_id:
            self._issues.append(WaitingError("waiting for the leader to share the service id"))
            return None
        server: KeyPair | None = None
        if data.server_secret:
            try:
                content = self.model.get_secret(id=data.server_secret).get_content()
                server = cluster.pair_from_secret(dict(content))
            except (ops.SecretNotFoundError, ops.ModelError) as err:
                logger.warning("cannot read the server certificate secret: %s", err)
        if server is None:
            self._issues.append(WaitingError(
                "waiting for the server certificate the leader shares"))
        return cluster.Identity(data.service_id, server)

    def _unit_count(self) -> int:
        relation = self._peer_relation()
        peers = len(relation.units) if relation is not None else 0
        return max(peers + 1, self.app.planned_units())

    def _database(self) -> tuple[bool, postgresql.Credentials | None]:
        """(the database relation exists, the credentials it gave or None yet)."""
        relation = None if self._database_gone else self.model.get_relation(DATABASE_RELATION)
        if relation is None:
            return False, None
        if self.unit.is_leader():
            request = postgresql.request_data()
            if any(relation.data[self.app].get(k) != v for k, v in request.items()):
                relation.data[self.app].update(request)
        if relation.app is None:
            return True, None

        def read_secret(uri: str) -> dict[str, str]:
            return dict(self.model.get_secret(id=uri).get_content(refresh=True))

        try:
            return True, postgresql.from_relation(relation.data[relation.app], read_secret)
        except postgresql.DatabaseDataError as err:
            self._issues.append(BlockedError(f"database relation: {err}"))
        except (ops.SecretNotFoundError, ops.ModelError) as err:
            self._issues.append(WaitingError(
                f"database relation: the credentials secret cannot be read yet ({err})"))
        return True, None

    def _store_holder(self) -> str | None:
        """The unit whose SQLite store is the application's until it moves to PostgreSQL
        (None: not chosen yet, the leader will). The leader pins it in the peer data:
        itself at first, and again only when that unit has gone, so a change of leader
        never swaps the store governors are served from."""
        relation = self._peer_relation()
        if relation is None:
            return self.unit.name
        holder = self._peer_data().sqlite_unit
        if self.unit.is_leader():
            alive = {self.unit.name} | {unit.name for unit in relation.units}
            if holder not in alive:
                holder = self.unit.name
                relation.data[self.app]["sqlite-unit"] = holder
        return holder

    def _copied_by(self, holder: str | None, url: str) -> bool:
        """Whether `holder` (another unit) reported its store copied into `url`."""
        relation = self._peer_relation()
        if relation is None or holder is None:
            return False
        return any(unit.name == holder and relation.data[unit].get("store-copied") == url
                   for unit in relation.units)

    def _store_plan(self, *, retry_copy: bool) -> StorePlan:
        """Decide the store; never two stores serving governors, never a stale one."""
        leader, app = self.unit.is_leader(), self.app.name
        if self._peer_relation() is None and self._unit_count() > 1:
            # An added unit's first hooks: which store is the application's is in the
            # peer relation; until then its service must not start on a store of its own.
            self._issues.append(WaitingError(
                "waiting for the cluster peer relation (this unit's service starts once "
                "it knows the application's store)"))
            return StorePlan(run=False, leads=False)
        holder = self._store_holder()
        holds = holder == self.unit.name
        peer = self._peer_data()
        related, credentials = self._database()
        integrate = f"`juju integrate {app} postgresql`"
        if credentials is not None:
            if peer.moved_to_postgresql:
                return StorePlan(credentials=credentials, leads=leader)
            if self._peer_relation() is None:
                self._issues.append(WaitingError("waiting for the cluster peer relation"))
                return StorePlan()
            url = credentials.url
            if leader and not holds and self._copied_by(holder, url):
                self._record_move(url)
                return StorePlan(credentials=credentials, leads=True)
            if not holds:
                self._issues.append(WaitingError(
                    f"waiting for {holder or 'the leader'} to copy its store into "
                    "PostgreSQL (this unit's service is stopped until then)"))
                return StorePlan(run=False, leads=False, another_serves=holder is not None)
            relation = self._peer_relation()
            assert relation is not None
            if relation.data[self.unit].get("store-copied") == url:
                return StorePlan(credentials=credentials, leads=leader)  # done, not recorded
            if self._stored.copy_failed_url == url and not retry_copy:
                self._issues.append(self._copy_blocked(self._stored.copy_failed_message))
                return StorePlan()
            return StorePlan(credentials=credentials, copy=True, leads=leader)
        if peer.moved_to_postgresql:
            what = "has no credentials yet" if related else "is gone"
            self._issues.append((WaitingError if related else BlockedError)(
                f"the database relation {what}: the application's data stays in PostgreSQL "
                f"({peer.store_url}); this unit's service is stopped and does not fall back "
                f"to its stale SQLite store" + ("" if related else f": {integrate}")))
            return StorePlan(run=False, leads=False)
        if related:
            self._issues.append(WaitingError("waiting for PostgreSQL's credentials"))
        units = self._unit_count()
        if units > 1:
            if holds:
                self._issues.append(BlockedError(
                    f"{units} units and no shared store: {integrate} (until then only "
                    "this unit serves governors, from its own store)"))
                return StorePlan()
            self._issues.append(BlockedError(
                f"{units} units and no shared store: {integrate} (until then this "
                f"unit's service is stopped; {holder or 'the leader'} serves)"))
            return StorePlan(run=False, leads=False, another_serves=holder is not None)
        return StorePlan()

    def _record_move(self, url: str) -> None:
        """The leader: the application's store is PostgreSQL from now on."""
        relation = self._peer_relation()
        assert relation is not None and self.unit.is_leader()
        relation.data[self.app].update({"store": cluster.STORE_POSTGRESQL, "store-url": url})

    def _copy_blocked(self, message: str) -> BlockedError:
        return BlockedError(
            f"could not copy the SQLite store into PostgreSQL: {message}; the service stays "
            "on its SQLite store (relate an empty database, or empty this one, then "
            "`juju remove-relation` and integrate again)")

    def _move_store(self, plan: StorePlan, python: str) -> None:
        """The holder's first switch: stop, copy SQLite into PostgreSQL, record it."""
        assert plan.credentials is not None
        if systemd.is_active(SERVICE_NAME):
            systemd.stop(SERVICE_NAME)
        result = store_move.copy_store(python, PATHS.current_release, PATHS.config_file)
        if not result.ok:
            raise CopyFailed(result.message)
        logger.info("copied the SQLite store into %s: %s", plan.credentials.url,
                    result.message or "done")
        relation = self._peer_relation()
        assert relation is not None
        # Every unit can tell the others it copied; only the leader records the move.
        relation.data[self.unit]["store-copied"] = plan.credentials.url
        if self.unit.is_leader():
            self._record_move(plan.credentials.url)
        self._stored.copy_failed_url = ""
        self._stored.copy_failed_message = ""

    def _deployments_spec(self, options: CharmOptions
                          ) -> tuple[DeploymentsSpec, BlockedError | None]:
        try:
            spec = parse_deployments(options.deployments)
            check_projects(spec, options.allowed_projects)
        except BlockedError as err:
            return DeploymentsSpec(), err
        return spec, None

    def _ensure_service(self, options: CharmOptions, spec: DeploymentsSpec,
                        identity: cluster.Identity | None, plan: StorePlan, *,
                        restart: bool) -> bool:
        """Install, render, (re)start when anything changed; True if (re)started."""
        if plan.copy and systemd.is_active(SERVICE_NAME):
            # Stopped before its config names PostgreSQL: a service restarted by systemd
            # (a crash) in between would write the target before the copy, or SQLite
            # after it.
            systemd.stop(SERVICE_NAME)
        if not install.is_installed(PATHS.install_dir):
            self.unit.status = ops.MaintenanceStatus("installing the service")
        sources = install.find_sources()
        changed = install.ensure_installed(sources, PATHS.install_dir)
        access, lxd_changed = self._lxd_access(options, spec)
        changed |= lxd_changed
        tls_cert = tls_key = None
        if identity is not None and identity.server is not None:
            changed |= render.ensure_file(PATHS.tls_key, identity.server.private_key, 0o600)
            changed |= render.ensure_file(PATHS.tls_cert, identity.server.certificate, 0o644)
            tls_cert, tls_key = str(PATHS.tls_cert), str(PATHS.tls_key)
        database = password_file = None
        if plan.credentials is not None:
            changed |= render.ensure_file(PATHS.database_password_file,
                                          plan.credentials.password, 0o600)
            database, password_file = plan.credentials.url, str(PATHS.database_password_file)
        elif PATHS.database_password_file.exists():
            PATHS.database_password_file.unlink()
        config = render.ServiceConfig(
            unit_name=self.unit.name, state_dir=str(PATHS.state_dir), socket=str(PATHS.socket),
            log_level=options.log_level, https_address=options.https_address,
            projects=options.allowed_projects, lxd=access, database=database,
            database_password_file=password_file,
            service_id=identity.service_id if identity is not None else None,
            tls_cert=tls_cert, tls_key=tls_key, workers=options.workers)
        changed |= render.ensure_file(PATHS.config_file, render.render_config(config), 0o640)
        unit_changed = render.ensure_file(PATHS.unit_file, render.render_unit(
            unit_name=self.unit.name, python=sources.python,
            code_dir=str(PATHS.current_release), config_file=str(PATHS.config_file)))
        if unit_changed:
            systemd.daemon_reload()
        if not plan.run:
            # Stopped, and not started at boot either: it would serve a store that is
            # not the application's (a second SQLite, or a stale one).
            if systemd.is_active(SERVICE_NAME):
                systemd.stop(SERVICE_NAME)
            if systemd.is_enabled(SERVICE_NAME):
                systemd.disable(SERVICE_NAME)
            self.unit.set_ports(*([options.port] if options.https_enabled else []))
            self._endpoint = None
            return False
        if unit_changed or not systemd.is_enabled(SERVICE_NAME):
            # Until it succeeds, every hook tries again (a failed enable would leave a
            # service that does not come back after a reboot).
            try:
                systemd.enable(SERVICE_NAME)
            except CharmError as err:
                self._issues.append(WaitingError(
                    f"{err.message} (tried again at the next hook)"))
        self.unit.set_ports(*([options.port] if options.https_enabled else []))
        self._endpoint = self._https_endpoint(options)
        if plan.copy:
            self._move_store(plan, sources.python)
            restart = True
        if changed or unit_changed or restart or not systemd.is_active(SERVICE_NAME):
            systemd.restart(SERVICE_NAME)
            return True
        return False

    def _lxd_access(self, options: CharmOptions, spec: DeploymentsSpec
                    ) -> tuple[render.LXDAccess, bool]:
        relation = self.model.get_relation(LXD_RELATION)
        if relation is None:
            return lxd_access.local_access(lxd_access.local_socket()), False
        pair = lxd_access.ensure_client_pair(
            PATHS, common_name=f"juju-{self.unit.name.replace('/', '-')}")
        projects = options.allowed_projects or tuple(sorted(spec.projects)) or ("default",)
        relation.data[self.unit].update(lxd_access.request_data(pair.certificate, projects))
        bags = [relation.data[relation.app]] if relation.app is not None else []
        bags += [relation.data[unit] for unit in sorted(relation.units, key=lambda u: u.name)]
        return lxd_access.remote_access(PATHS, lxd_access.parse_remote(bags))

    def _https_endpoint(self, options: CharmOptions,
                        relation: ops.Relation | None = None) -> str | None:
        """This unit's URL; with `relation`, the address Juju gives for that relation
        (across models, the ingress address the other model can reach)."""
        if not options.https_enabled:
            return None
        host = options.listen_address.strip("[]")
        if not host or host in ("0.0.0.0", "::"):
            binding = self.model.get_binding(relation if relation is not None
                                             else GOVERNOR_RELATION)
            address = binding.network.ingress_address if binding is not None else None
            host = str(address) if address is not None else "localhost"
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{options.port}"

    def _server_certificate_path(self, identity: cluster.Identity | None):
        if identity is not None and identity.server is not None:
            return PATHS.tls_cert
        return PATHS.server_cert

    def _withdraw_governors(self, *, another_serves: bool) -> None:
        """This unit's service does not run: governors must not be sent to it.

        When another unit's service serves (it holds the SQLite store), the leader still
        writes the application's answer, which only it can write: the key that unit
        makes is named from the relation and the request alone, so the answer is the
        request's. Nobody serving (the shared store unreachable): nothing is granted."""
        for request in self.governors.requests():
            if not another_serves:
                self.governors.withdraw(request.relation_id)
            elif request.problem or not request.is_complete:
                self.governors.publish_for_another_unit(request.relation_id,
                                                        error=request.problem)
            else:
                assert request.deployment is not None
                fingerprint = request.certificate_fingerprint
                assert fingerprint is not None
                self.governors.publish_for_another_unit(request.relation_id, Grant(
                    deployment=request.deployment, project=request.project,
                    key_name=request.key_name, role=request.role,
                    certificate_fingerprint=fingerprint))

    def _serve_governors(self, service: Service, options: CharmOptions,
                         spec: DeploymentsSpec | None, identity: cluster.Identity | None,
                         plan: StorePlan) -> None:
        requests = self.governors.requests()
        managed: set[tuple[str, str]] = set()
        if spec is not None and plan.leads:
            managed = {(d.project, name) for name, d in spec.deployments.items()}
            try:
                deployments.reconcile(service, spec, self.app.name,
                                      governors.webhook_urls(requests), unit=self.unit.name)
            except BlockedError as err:  # governors are still served
                self._issues.append(err)
        server_certificate = None
        certificate_path = self._server_certificate_path(identity)
        if self._endpoint and certificate_path.exists():
            server_certificate = certificate_path.read_text()
        for request in requests:
            relation = self.model.get_relation(GOVERNOR_RELATION, request.relation_id)
            previous = self.governors.provisioned(relation) if relation else None
            endpoint = self._https_endpoint(options, relation) if relation else self._endpoint
            endpoint = endpoint if server_certificate else None
            if plan.leads:
                outcome = governors.provision(
                    service, request, previous, managed=managed, endpoint=endpoint,
                    server_certificate=server_certificate)
            else:  # the leader makes the key in the shared store; this unit serves it
                outcome = governors.observe(service, request, endpoint=endpoint,
                                            server_certificate=server_certificate)
            if outcome.grant is not None:
                self.governors.publish_grant(request.relation_id, outcome.grant)
            elif outcome.error is not None:
                logger.warning("governor relation %d: %s", request.relation_id, outcome.error)
                self.governors.publish_error(request.relation_id, outcome.error)
            else:
                self.governors.withdraw(request.relation_id)

    # --- cos-agent ---------------------------------------------------------------------

    def _metrics_pair(self) -> KeyPair:
        """The scraper's client certificate, made once per unit; its key stays here."""
        if PATHS.metrics_cert.exists() and PATHS.metrics_key.exists():
            return KeyPair(PATHS.metrics_cert.read_text())
        pair = make_client_pair(f"juju-{self.unit.name.replace('/', '-')}-metrics")
        render.ensure_file(PATHS.metrics_key, pair.private_key, 0o600)
        render.ensure_file(PATHS.metrics_cert, pair.certificate, 0o644)
        return KeyPair(pair.certificate)

    def _publish_cos_agent(self, service: Service | None, options: CharmOptions,
                           identity: cluster.Identity | None) -> None:
        """Alert rules, dashboards and (when the service runs) the metrics scrape job."""
        relations = self.model.relations[COS_AGENT_RELATION]
        if not relations:
            if service is not None and PATHS.metrics_cert.exists():
                # Scraping ended: the service no longer trusts the scraper.
                service.remove_certificate(fingerprint(PATHS.metrics_cert.read_text()),
                                           missing_ok=True)
                for path in (PATHS.metrics_key, PATHS.metrics_cert):
                    path.unlink(missing_ok=True)
            return
        targets: list[cos_agent.ScrapeTarget] = []
        certificate_path = self._server_certificate_path(identity)
        if not options.https_enabled:
            self._issues.append(BlockedError(
                "cos-agent: the metrics are served over HTTPS only, and port is 0"))
        elif service is not None and certificate_path.exists():
            pair = self._metrics_pair()
            if service.find_certificate(pair.fingerprint) is None:
                service.add_certificate(
                    pair.certificate, kind="metrics",
                    name=f"juju-{self.unit.name.replace('/', '-')}-metrics")
            host = options.listen_address.strip("[]")
            if not host or host in ("0.0.0.0", "::"):
                host = "localhost"
            host = f"[{host}]" if ":" in host else host
            targets.append(cos_agent.ScrapeTarget(
                address=f"{host}:{options.port}",
                server_certificate=certificate_path.read_text(),
                client_certificate=pair.certificate,
                client_key_file=str(PATHS.metrics_key)))
        data = cos_agent.databag(cos_agent.unit_data(
            JujuTopology.from_charm(self), targets, app_name=self.app.name))
        for relation in relations:
            relation.data[self.unit].update(data)

    # --- actions -------------------------------------------------------------------------

    @staticmethod
    def _params(event: ops.ActionEvent, model: type[_P]) -> _P | None:
        """The parsed parameters, or None once the action has failed saying why."""
        try:
            return actions.parse_params(model, event.params)
        except actions.ActionError as err:
            event.fail(err.message)
            return None

    def _run(self, event: ops.ActionEvent, work: Callable[[Service], dict[str, Any]]) -> None:
        try:
            with connect(PATHS.socket) as service:
                results = work(service)
        except (ClientError, CharmError) as err:
            event.fail(err.message)
            return
        event.set_results(results)

    def _on_create_key(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.CreateKeyParams)
        if params is None:
            return

        def work(service: Service) -> dict[str, Any]:
            results, pair = actions.create_key(service, params, common_name=params.name)
            if pair.private_key:
                # The private key never goes into results (they are logged and kept by
                # Juju): it is a secret, readable with `juju show-secret --reveal`.
                secret = self.unit.add_secret(
                    {"private-key": pair.private_key, "certificate": pair.certificate},
                    label=actions.key_secret_label(params),
                    description=f"private key of deployment key {params.name} "
                                f"({params.project}/{params.deployment})")
                results["private-key-secret"] = secret.id or ""
            return results

        self._run(event, work)

    def _on_delete_key(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.KeyParams)
        if params is None:
            return

        def work(service: Service) -> dict[str, Any]:
            results = actions.delete_key(service, params)
            # The key's private key (if the charm made it) goes with the key.
            try:
                secret = self.model.get_secret(label=actions.key_secret_label(params))
            except ops.SecretNotFoundError:
                return results
            secret.remove_all_revisions()
            results["removed-secret"] = secret.id or ""
            return results

        self._run(event, work)

    def _on_list_keys(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.DeploymentParams)
        if params is None:
            return
        self._run(event, lambda service: actions.list_keys(service, params))

    def _on_scale(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.ScaleParams)
        if params is None:
            return

        def work(service: Service) -> dict[str, Any]:
            event.log(f"scaling {params.deployment}/{params.shape} to {params.count}")
            results, outcome = actions.scale(service, params)
            if outcome.error:
                # The results say what did happen; the failure carries the service's error.
                event.set_results(results)
                raise actions.ActionError(outcome.error)
            return results

        self._run(event, work)

    def _on_list_deployments(self, event: ops.ActionEvent) -> None:
        self._run(event, actions.list_deployments)

    def _on_show(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.ShowParams)
        if params is None:
            return
        self._run(event, lambda service: actions.show(service, params))

    def _on_add_trusted_certificate(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.AddCertificateParams)
        if params is None:
            return
        self._run(event, lambda service: actions.add_trusted_certificate(service, params))

    def _on_remove_trusted_certificate(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.RemoveCertificateParams)
        if params is None:
            return
        self._run(event, lambda service: actions.remove_trusted_certificate(service, params))


    def _on_force_delete_deployment(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.DeploymentParams)
        if params is None:
            return
        self._run(event, lambda service: deployments.force_delete_deployment(
            service, params.project, params.deployment))

    def _on_force_delete_shape(self, event: ops.ActionEvent) -> None:
        params = self._params(event, actions.ShapeParams)
        if params is None:
            return
        self._run(event, lambda service: deployments.force_delete_shape(
            service, params.project, params.deployment, params.shape))


def one_line(message: str) -> str:
    """Juju shows one line of status: newlines and runs of blanks become one space."""
    return " ".join(message.split())


if __name__ == "__main__":  # pragma: nocover
    ops.main(LXDDeploymentsCharm)
