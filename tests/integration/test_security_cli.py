"""The CLI as a remote admin over HTTPS, as `lxc remote`: the real `lxd-deployments`
(a subprocess, with its own config directory) against the real service and LXD.

`remote add` pins the server certificate and makes the CLI's client certificate, which
the service refuses until an admin trusts it; then every command works over HTTPS
(`NAME:` prefixes, `--remote`, `remote switch`), launches included, until the
certificate is removed from the trust store."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
import yaml

from lxd_deployments.pki import fingerprint_of_pem

from .conftest import CLI_TIMEOUT, CliResult, _service_env
from .helpers import cli_error, cli_ok, ok, ours


@pytest.fixture
def remote_cli(service, tmp_path):
    env = _service_env()
    env["LXD_DEPLOYMENTS_SOCKET"] = str(service.socket_path)
    env["LXD_DEPLOYMENTS_CONF"] = str(tmp_path / "conf")

    def run(*argv: str) -> CliResult:
        result = subprocess.run([sys.executable, "-m", "lxd_deployments", *argv], env=env,
                                input="", capture_output=True, text=True, timeout=CLI_TIMEOUT)
        return CliResult(result.returncode, result.stdout, result.stderr)

    run.conf = tmp_path / "conf"
    return run


def test_a_remote_admin_over_https(service, remote_cli, lxd, lxd_project):
    run, conf = remote_cli, remote_cli.conf
    added = cli_ok(run("remote", "add", "prod", service.https_url, "--accept-certificate"))
    client_pem = (conf / "client.crt").read_text()
    assert "does not trust this client yet" in added
    assert fingerprint_of_pem(client_pem) in added
    assert stat.S_IMODE((conf / "client.key").stat().st_mode) == 0o600
    assert fingerprint_of_pem((conf / "servercerts" / "prod.crt").read_text()) == \
        fingerprint_of_pem(service.server_cert_path.read_text())
    assert "prod" in yaml.safe_load((conf / "config.yml").read_text())["remotes"]

    # Not trusted yet: the service does not complete the handshake.
    refused = run("list", "prod:", "--project", lxd_project)
    assert refused.code == 1 and "does not trust" in refused.stderr

    # An admin on the service's host trusts it (through the local socket).
    cli_ok(run("trust", "add", str(conf / "client.crt"), "--type", "client", "--name", "ops"))
    cli_ok(run("create", "prod:secure", "--project", lxd_project, "--description", "via TLS"))
    assert "secure" in cli_ok(run("list", "prod:", "--project", lxd_project, "--format", "csv"))
    assert "description: via TLS" in cli_ok(run("show", "secure", "--remote", "prod",
                                                "--project", lxd_project))

    # The default remote: every command goes over HTTPS, a real launch included.
    cli_ok(run("remote", "switch", "prod"))
    cli_ok(run("shape", "create", "secure", "front", "--from-image", "busybox",
               "--scaling-max", "2", "--project", lxd_project))
    launched = run("shape", "instance", "launch", "secure", "front", "c1", "--project",
                   lxd_project)
    assert launched.code == 0, launched.stderr
    assert ours(lxd.instances(lxd_project)["c1"], service.service_id, "secure", "front")
    audit = ok(service.http.get("/1.0/audit"))
    launched = [e for e in audit if e["path"].startswith("/1.0/deployments/secure/shapes/front/"
                                                         "instances")]
    assert [(e["auth_method"], e["identity"].split(" ")[0], e["status_code"])
            for e in launched] == [("tls", "ops", 202)]

    # Removing the certificate (from the local remote) cuts it off at once.
    cli_ok(run("trust", "remove", fingerprint_of_pem(client_pem)[:12], "--remote", "local"))
    message = cli_error(run("list", "--project", lxd_project))
    assert message.startswith(f"Cannot reach the deployments service at {service.https_url}")
    cli_ok(run("remote", "switch", "local"))
    cli_ok(run("remote", "remove", "prod"))
    assert cli_ok(run("remote", "get-default")) == "local\n"
