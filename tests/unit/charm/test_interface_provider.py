"""The charm as the provider of `lxd-deployments-governor`, checked by pytest-interface-tester
against the interface's specification (interfaces/lxd_deployments_governor/v0)."""

from __future__ import annotations

import yaml
from ops import testing

import charm
from lxd_deployments_charm.certs import make_client_pair
from tests.interface_spec import INTERFACE, REPO, spec_repository

WEB = "web: {shapes: {frontend: {image: busybox, max: 3}}}"


def test_the_provider_meets_the_interface_specification(interface_tester, workload,
                                                        tmp_path):
    workload.paths.state_dir.mkdir(parents=True, exist_ok=True)
    workload.paths.server_cert.write_text(make_client_pair("server").certificate)
    meta = yaml.safe_load((REPO / "metadata.yaml").read_text())
    interface_tester.configure(
        charm_type=charm.LXDDeploymentsCharm, repo=spec_repository(tmp_path), branch="main",
        interface_name=INTERFACE, interface_version=0, meta=meta,
        actions=yaml.safe_load((REPO / "actions.yaml").read_text()),
        config=yaml.safe_load((REPO / "config.yaml").read_text()),
        state_template=testing.State(leader=True, config={"deployments": WEB}))
    interface_tester.run()
