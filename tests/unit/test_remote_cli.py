"""`lxd-deployments remote ...` and commands on a remote, against the real listeners in
process (HTTPS with client certificates, LXD faked): as `lxc remote add` does, the
server certificate is pinned after its fingerprint is accepted, and the CLI's own client
certificate is what the remote must trust."""

from __future__ import annotations

import io
import stat
from dataclasses import dataclass

import pytest
import yaml

from lxd_deployments.cli.main import main
from lxd_deployments.pki import fingerprint_of_pem

from .https_service import running_service


@pytest.fixture
def service(core, tmp_path):
    with running_service(core, tmp_path / "service") as running:
        yield running


@dataclass
class Result:
    code: int
    out: str
    err: str


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def cli(service, tmp_path):
    conf = tmp_path / "conf"
    environ = {"LXD_DEPLOYMENTS_CONF": str(conf),
               "LXD_DEPLOYMENTS_SOCKET": str(service.socket_path), "HOME": str(tmp_path)}

    def run(*argv: str, stdin: io.StringIO | None = None) -> Result:
        stdout, stderr = io.StringIO(), io.StringIO()
        code = main(list(argv), stdin=stdin or io.StringIO(""), stdout=stdout, stderr=stderr,
                    environ=environ)
        return Result(code, stdout.getvalue(), stderr.getvalue())

    run.conf = conf
    return run


def test_remote_add_pins_the_server_and_says_how_to_get_trusted(cli, service):
    added = cli("remote", "add", "prod", service.url, "--accept-certificate")
    assert added.code == 0, added.err
    conf = cli.conf
    assert stat.S_IMODE((conf / "client.key").stat().st_mode) == 0o600
    pinned = (conf / "servercerts" / "prod.crt").read_text()
    assert fingerprint_of_pem(pinned) == fingerprint_of_pem(service.server_cert_path.read_text())
    client_fingerprint = fingerprint_of_pem((conf / "client.crt").read_text())
    assert "does not trust this client yet" in added.out
    assert f"lxd-deployments trust add {conf / 'client.crt'} --type client" in added.out
    assert client_fingerprint in added.out
    config = yaml.safe_load((conf / "config.yml").read_text())
    assert config == {"default-remote": "local", "remotes": {"prod": {
        "addr": service.url, "protocol": "lxd-deployments", "auth-type": "tls"}}}

    # Until trusted, the handshake is refused: the error says why that may be.
    refused = cli("list", "prod:")
    assert refused.code == 1
    assert "does not trust" in refused.err

    assert cli("trust", "add", str(conf / "client.crt"), "--type", "client").code == 0
    assert cli("create", "prod:web", "--description", "over HTTPS").code == 0
    assert "web" in cli("list", "prod:", "--format", "csv").out
    assert "description: over HTTPS" in cli("show", "prod:web").out
    assert "web" in cli("list", "--remote", "prod", "--format", "csv").out


def test_the_certificate_must_be_accepted(cli, service):
    fingerprint = fingerprint_of_pem(service.server_cert_path.read_text())
    refused = cli("remote", "add", "prod", service.url)
    assert refused.code == 1
    assert fingerprint in refused.err and "--accept-certificate" in refused.err
    assert "prod" not in cli("remote", "list", "--format", "csv").out

    nacked = cli("remote", "add", "prod", service.url, stdin=TTY("n\n"))
    assert (nacked.code, nacked.err) == (1, "Error: Server certificate NACKed by user\n")
    assert f"Certificate fingerprint: {fingerprint}" in nacked.out

    accepted = cli("remote", "add", "prod", service.url, stdin=TTY(fingerprint[:16] + "\n"))
    assert accepted.code == 0, accepted.err


def test_switch_list_and_remove(cli, service):
    assert cli("remote", "add", "prod", service.url, "--accept-certificate").code == 0
    assert cli("trust", "add", str(cli.conf / "client.crt")).code == 0
    assert cli("remote", "get-default").out == "local\n"
    assert cli("remote", "switch", "prod").code == 0
    assert cli("remote", "get-default").out == "prod\n"
    assert cli("create", "web").code == 0  # on the default remote, over HTTPS
    assert "web" in cli("list", "local:", "--format", "csv").out
    listed = cli("remote", "list", "--format", "csv").out.splitlines()
    assert f"prod (current),{service.url},lxd-deployments,tls,NO" in listed
    assert f"local,unix://{service.socket_path},lxd-deployments,unix,YES" in listed

    assert cli("remote", "remove", "prod").err == (
        'Error: Remote "prod" is the default remote: switch to another one first\n')
    assert cli("remote", "remove", "local").code == 1
    assert cli("remote", "switch", "local").code == 0
    assert cli("remote", "remove", "prod").code == 0
    assert not (cli.conf / "servercerts" / "prod.crt").exists()
    assert cli("list", "prod:").err == (
        'Error: Remote "prod" doesn\'t exist (see `lxd-deployments remote list`)\n')


def test_remote_add_checks_its_arguments(cli, service):
    assert cli("remote", "add", "local", service.url, "--accept-certificate").err == (
        'Error: Remote "local" already exists\n')
    assert "only https://" in cli("remote", "add", "x", "http://127.0.0.1:1").err
    assert "Invalid remote name" in cli("remote", "add", "a:b", service.url).err
    unreachable = cli("remote", "add", "x", "https://127.0.0.1:1", "--accept-certificate")
    assert unreachable.code == 1 and "Cannot reach https://127.0.0.1:1" in unreachable.err
    assert cli("show", "prod:", "--remote", "other").code == 2
