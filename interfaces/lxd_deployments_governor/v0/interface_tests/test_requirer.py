"""The requirer (a governor charm) publishes a valid request: a certificate, never a key.

The charm under test decides leadership (its state template): run as the leader."""

from __future__ import annotations

from interface_tester import Tester
from scenario import Relation, State

from charms.lxd_deployments.v0.governor import INTERFACE_NAME


def test_the_leader_publishes_its_request():
    tester = Tester(State(leader=True, relations=[Relation(
        endpoint="deployments", interface=INTERFACE_NAME)]))
    state_out = tester.run("deployments-relation-created")
    tester.assert_schema_valid()
    data = next(iter(state_out.relations)).local_app_data
    assert "PRIVATE KEY" not in str(data)
