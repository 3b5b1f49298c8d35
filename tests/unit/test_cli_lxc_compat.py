"""The CLI where `lxc` users expect lxc's behaviour: positional KEY=VALUE on create,
`--format compact`, `list` filters, `trust add REMOTE: FILE`, duplicate YAML keys
refused, `key unset ... role`, and a current project per remote."""

from __future__ import annotations

import pytest

from lxd_deployments.cli.remotes import Remotes

from .test_cli import FakeAPI, run, sync

DEPLOYMENTS = [
    {"name": "web", "description": "", "config": {"user.team": "a"}, "used_by": [],
     "deployment_shapes": {}, "governor_webhook_url": ""},
    {"name": "webshop", "description": "", "config": {"user.team": "b"}, "used_by": [],
     "deployment_shapes": {}, "governor_webhook_url": ""},
    {"name": "db", "description": "", "config": {}, "used_by": [],
     "deployment_shapes": {}, "governor_webhook_url": ""},
]


@pytest.fixture
def fake_api() -> FakeAPI:
    return FakeAPI()


def test_create_takes_positional_config_pairs(fake_api):
    fake_api.on("POST", "/1.0/deployments", sync(None))
    result = run(fake_api, "create", "dep4", "--description", "d", "user.foo=bar",
                 "user.bar=baz")
    assert result.code == 0, result.err
    assert fake_api.body("POST")["config"] == {"user.foo": "bar", "user.bar": "baz"}


def test_a_positional_pair_without_equals_is_lxcs_error(fake_api):
    result = run(fake_api, "create", "dep4", "user.foo")
    assert (result.code, result.err) == (1, "Error: Bad key/value pair: user.foo\n")
    assert not fake_api.sent("POST")


@pytest.mark.parametrize(("filters", "names"), [
    ([], ["db", "web", "webshop"]),
    (["-f", "csv", "web"], ["web", "webshop"]),  # after the flags too, as lxc
    (["web"], ["web", "webshop"]),          # a name prefix
    (["^web$"], ["web"]),                    # an anchored regular expression
    (["w.*p"], ["webshop"]),
    (["user.team=a"], ["web"]),              # a config key
    (["web", "user.team=b"], ["webshop"]),  # all must match
    (["nothing"], []),
])
def test_list_filters_as_lxc_list(fake_api, filters, names):
    fake_api.on("GET", "/1.0/deployments", sync(DEPLOYMENTS))
    result = run(fake_api, "list", *filters, *([] if "-f" in filters else ["-f", "csv"]))
    assert [line.split(",")[0] for line in result.out.splitlines()] == names


def test_compact_format_is_a_table_without_borders(fake_api):
    fake_api.on("GET", "/1.0/deployments", sync(DEPLOYMENTS[:2]))
    out = run(fake_api, "list", "--format", "compact").out
    gap = " " * len("DESCRIPTION")
    assert out.splitlines() == ["  NAME     DESCRIPTION  SHAPES  USED BY",
                                f"  web      {gap}  0       0",
                                f"  webshop  {gap}  0       0"]


def test_trust_add_takes_a_remote_prefix_and_names_by_the_whole_file_name(tmp_path):
    conf = tmp_path / "conf"
    remotes = Remotes(conf, {"peer": {"addr": "https://127.0.0.1:1"}})
    remotes.save()
    pem = tmp_path / "dep1-key1.crt"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
    fake = FakeAPI()
    fake.on("POST", "/1.0/certificates", sync(None))
    result = run(fake, "trust", "add", "peer:", str(pem), "--type", "deployments",
                 environ={"LXD_DEPLOYMENTS_CONF": str(conf)})
    assert result.code == 0, result.err
    assert fake.body("POST")["name"] == "dep1-key1.crt"


def test_trust_add_refuses_a_second_file(fake_api, tmp_path):
    result = run(fake_api, "trust", "add", "a.crt", "b.crt")
    assert result.code == 2
    assert not fake_api.sent("POST")


@pytest.mark.parametrize("command", [["create", "dep1"], ["edit", "dep1"]])
def test_duplicate_yaml_keys_are_refused_with_their_line(fake_api, command):
    fake_api.on("GET", "/1.0/deployments/dep1", sync(DEPLOYMENTS[0], etag="e"))
    document = "description: x\nconfig:\n  user.a: 1\nconfig: {}\n"
    result = run(fake_api, *command, stdin=document)
    assert (result.code, result.err) == (
        1, 'Error: Invalid YAML: line 4: mapping key "config" already defined at line 2\n')
    assert not fake_api.sent("POST") and not fake_api.sent("PUT")


def test_key_unset_role_gives_the_default_role_back(fake_api):
    key = {"name": "k1", "description": "", "role": "rw", "certificate_fingerprint": "f"}
    fake_api.on("GET", "/1.0/deployments/dep1/keys/k1", sync(key, etag="e"))
    fake_api.on("PUT", "/1.0/deployments/dep1/keys/k1", sync(None))
    assert run(fake_api, "key", "unset", "dep1", "k1", "role").code == 0
    assert fake_api.body("PUT") == {"description": "", "role": "ro"}


def test_a_remote_carries_a_current_project_and_project_wins(tmp_path):
    environ = {"LXD_DEPLOYMENTS_CONF": str(tmp_path), "LXD_DEPLOYMENTS_SOCKET":
               str(tmp_path / "none.socket")}
    fake = FakeAPI()
    assert run(fake, "project", "get-current", environ=environ).out == "default\n"
    assert run(fake, "project", "switch", "tenant", environ=environ).code == 0
    assert run(fake, "project", "get-current", environ=environ).out == "tenant\n"
    remotes = Remotes.load(environ)
    assert remotes.project_of("local") == "tenant"
    assert remotes.names() == ["local"]
    # Back to the default forgets the choice.
    assert run(fake, "project", "switch", "default", environ=environ).code == 0
    assert Remotes.load(environ).project_of("local") is None


def test_commands_use_the_remotes_current_project_unless_given_one(tmp_path, monkeypatch):
    environ = {"LXD_DEPLOYMENTS_CONF": str(tmp_path)}
    remotes = Remotes.load(environ)
    remotes.set_project("local", "tenant")
    remotes.save()
    fake = FakeAPI()
    fake.on("GET", "/1.0/deployments", sync([]))
    monkeypatch.setattr(Remotes, "client", lambda self, name, env: fake.client())
    from lxd_deployments.cli.main import main

    def projects(*argv):
        assert main(list(argv), environ=environ) == 0
        return fake.sent("GET")[-1].url.params.get("project")

    assert projects("list") == "tenant"
    assert projects("list", "--project", "other") == "other"
