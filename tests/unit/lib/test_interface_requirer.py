"""A governor charm using the library as the requirer of `lxd-deployments-governor`,
checked by pytest-interface-tester against the interface's specification."""

from __future__ import annotations

import ops
from ops.testing import State

from charms.lxd_deployments.v0.governor import GovernorRequirer
from lxd_deployments_charm.certs import make_client_pair
from tests.interface_spec import INTERFACE, spec_repository

CERTIFICATE = make_client_pair("governor").certificate


class GovernorCharm(ops.CharmBase):
    def __init__(self, framework: ops.Framework) -> None:
        super().__init__(framework)
        self.deployments = GovernorRequirer(self, relation_name="deployments")
        framework.observe(self.on.deployments_relation_created, self._request)

    def _request(self, _: ops.EventBase) -> None:
        self.deployments.request_access(deployment="web", certificate=CERTIFICATE)


def test_the_requirer_meets_the_interface_specification(interface_tester, tmp_path):
    interface_tester.configure(
        charm_type=GovernorCharm, repo=spec_repository(tmp_path), branch="main",
        interface_name=INTERFACE, interface_version=0,
        meta={"name": "governor", "requires": {"deployments": {"interface": INTERFACE}}},
        state_template=State(leader=True))
    interface_tester.run()
