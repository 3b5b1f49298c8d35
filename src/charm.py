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
from typing import Any, TypeVar

import ops

from charms.lxd_deployments.v0.governor import GovernorProvider, GovernorRemovedEvent
from lxd_deployments_charm import (
    actions,
    deployments,
    governors,
    install,
    lxd_access,
    render,
    systemd,
)
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
# Seconds to wait for the service after a restart, and when it should already be up.
STARTUP_TIMEOUT = 30.0
RUNNING_TIMEOUT = 5.0

_P = TypeVar("_P", bound=actions.Params)


class LXDDeploymentsCharm(ops.CharmBase):
    """Install, configure and run the deployments service; serve governors and admins."""

    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.governors = GovernorProvider(self, GOVERNOR_RELATION)
        # What this dispatch found; collect-status turns it into the unit's status.
        self._reconciled = False
        self._issues: list[CharmError] = []
        self._endpoint: str | None = None
        lxd = self.on[LXD_RELATION]
        for event in (self.on.install, self.on.start, self.on.config_changed,
                      self.on.update_status, self.on.leader_elected,
                      lxd.relation_created, lxd.relation_changed, lxd.relation_departed,
                      lxd.relation_broken, self.governors.on.governor_changed):
            framework.observe(event, self._on_change)
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

    def _on_upgrade_charm(self, _: ops.UpgradeCharmEvent) -> None:
        # New code, maybe a new store schema: the service migrates its store at start.
        self._reconcile(restart=True)

    def _on_governor_removed(self, event: GovernorRemovedEvent) -> None:
        if event.grant is not None:
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

    def _reconcile(self, *, restart: bool = False) -> None:
        self._reconciled = True
        try:
            options = parse_options(dict(self.config))
            spec, spec_error = self._deployments_spec(options)
            if spec_error is not None:  # the service still runs, and governors are served
                self._issues.append(spec_error)
            restarted = self._ensure_service(options, spec, restart=restart)
            with connect(PATHS.socket) as service:
                service.wait_ready(STARTUP_TIMEOUT if restarted else RUNNING_TIMEOUT)
                # The new release runs: the old ones are no longer a way back.
                for old in install.prune_releases(PATHS.install_dir):
                    logger.info("removed the old release %s", old.name)
                self._serve_governors(service, options, spec if spec_error is None else None)
        except CharmError as err:
            self._issues.append(err)
        except ClientError as err:
            self._issues.append(WaitingError(
                f"the service does not answer: {err.message} "
                f"(see journalctl -u {SERVICE_NAME})"))

    def _deployments_spec(self, options: CharmOptions
                          ) -> tuple[DeploymentsSpec, BlockedError | None]:
        try:
            spec = parse_deployments(options.deployments)
            check_projects(spec, options.allowed_projects)
        except BlockedError as err:
            return DeploymentsSpec(), err
        return spec, None

    def _ensure_service(self, options: CharmOptions, spec: DeploymentsSpec, *,
                        restart: bool) -> bool:
        """Install, render, (re)start when anything changed; True if (re)started."""
        if not install.is_installed(PATHS.install_dir):
            self.unit.status = ops.MaintenanceStatus("installing the service")
        sources = install.find_sources()
        changed = install.ensure_installed(sources, PATHS.install_dir)
        access, lxd_changed = self._lxd_access(options, spec)
        config = render.ServiceConfig(
            unit_name=self.unit.name, state_dir=str(PATHS.state_dir), socket=str(PATHS.socket),
            log_level=options.log_level, https_address=options.https_address,
            projects=options.allowed_projects, lxd=access)
        changed |= lxd_changed
        changed |= render.ensure_file(PATHS.config_file, render.render_config(config), 0o640)
        unit_changed = render.ensure_file(PATHS.unit_file, render.render_unit(
            unit_name=self.unit.name, python=sources.python,
            code_dir=str(PATHS.current_release), config_file=str(PATHS.config_file)))
        if unit_changed:
            systemd.daemon_reload()
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

    def _serve_governors(self, service: Service, options: CharmOptions,
                         spec: DeploymentsSpec | None) -> None:
        requests = self.governors.requests()
        managed: set[tuple[str, str]] = set()
        if spec is not None:
            managed = {(d.project, name) for name, d in spec.deployments.items()}
            try:
                deployments.reconcile(service, spec, self.app.name,
                                      governors.webhook_urls(requests), unit=self.unit.name)
            except BlockedError as err:  # governors are still served
                self._issues.append(err)
        server_certificate = None
        if self._endpoint and PATHS.server_cert.exists():
            server_certificate = PATHS.server_cert.read_text()
        for request in requests:
            relation = self.model.get_relation(GOVERNOR_RELATION, request.relation_id)
            previous = self.governors.provisioned(relation) if relation else None
            endpoint = self._https_endpoint(options, relation) if relation else self._endpoint
            outcome = governors.provision(
                service, request, previous, managed=managed,
                endpoint=endpoint if server_certificate else None,
                server_certificate=server_certificate)
            if outcome.grant is not None:
                self.governors.publish_grant(request.relation_id, outcome.grant)
            elif outcome.error is not None:
                logger.warning("governor relation %d: %s", request.relation_id, outcome.error)
                self.governors.publish_error(request.relation_id, outcome.error)
            else:
                self.governors.withdraw(request.relation_id)

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
            if outcome.failed:
                event.set_results(results)
                names = ", ".join(f"{c.name} ({c.error})" for c in outcome.failed)
                raise actions.ActionError(
                    f"{len(outcome.failed)} of {len(outcome.changes)} instance change(s) "
                    f"failed: {names}")
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
