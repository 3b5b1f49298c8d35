"""The provider (lxd-deployments) answers a governor's request with a valid databag."""

from __future__ import annotations

from interface_tester import Tester
from scenario import Relation, State

from charms.lxd_deployments.v0.governor import INTERFACE_NAME

# A certificate made once for these tests (public data only).
from _certificate import CERTIFICATE  # noqa: E402  (the tests directory is on sys.path)


def test_a_complete_request_gets_a_grant_and_an_endpoint():
    tester = Tester(State(leader=True, relations=[Relation(
        endpoint="governor", interface=INTERFACE_NAME,
        remote_app_data={"certificate": CERTIFICATE, "deployment": "web", "role": "rw"})]))
    state_out = tester.run("governor-relation-changed")
    tester.assert_schema_valid()
    relation = next(iter(state_out.relations))
    assert relation.local_app_data["key_name"] == f"juju-relation-{relation.id}"
    assert relation.local_unit_data["endpoint"].startswith("https://")


def test_an_unknown_deployment_is_an_error_in_the_databag():
    tester = Tester(State(leader=True, relations=[Relation(
        endpoint="governor", interface=INTERFACE_NAME,
        remote_app_data={"certificate": CERTIFICATE, "deployment": "nope"})]))
    state_out = tester.run("governor-relation-changed")
    tester.assert_schema_valid()
    assert "unknown deployment" in next(iter(state_out.relations)).local_app_data["error"]


def test_an_empty_request_gets_nothing_yet():
    tester = Tester(State(leader=True, relations=[Relation(
        endpoint="governor", interface=INTERFACE_NAME)]))
    tester.run("governor-relation-changed")
    tester.assert_relation_data_empty()
