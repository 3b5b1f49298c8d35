"""`lxd-deployments remote add|list|remove|switch|get-default`, as `lxc remote`.

`remote add NAME URL` makes this CLI's client certificate on first use, fetches the
server's certificate, shows its fingerprint and pins it once accepted (interactively,
or with `--accept-certificate`), then checks that the service answers. A service only
completes a TLS handshake with a client certificate it trusts: until an admin of that
service runs `lxd-deployments trust add client.crt --type client` (or makes a
deployment key for it), the remote is saved but the command says how to get trusted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl

from lxd_deployments.client import SOCKET_ENV, ClientError, DeploymentsClient, ServiceUnreachable
from lxd_deployments.pki import default_client_name, ensure_key_pair, fingerprint_of_pem

from .context import CommandError, Context
from .output import Column, field_cell, render_list
from .parsing import add_command, add_format_flag
from .remotes import (
    LOCAL,
    PROTOCOL,
    Remotes,
    normalize_url,
    pinned_context,
    split_host_port,
    validate_remote_name,
)

FETCH_TIMEOUT = 10.0
PROBE_TIMEOUT = 30.0


def fetch_server_certificate(url: str) -> str:
    """The PEM certificate the server presents (not verified: the user checks its
    fingerprint, then it is pinned)."""
    host, port = split_host_port(url.removeprefix("https://"))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=FETCH_TIMEOUT) as raw, \
                context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as err:
        raise CommandError(f"Cannot reach {url}: {err.strerror or err}") from err
    if not der:
        raise CommandError(f"{url} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der)


def _accepted(ctx: Context, args: argparse.Namespace, fingerprint: str) -> bool:
    if args.accept_certificate:
        return True
    if ctx.stdin_is_tty():
        ctx.out(f"Certificate fingerprint: {fingerprint}")
        ctx.stdout.write("ok (y/n/[fingerprint])? ")
        ctx.stdout.flush()
        answer = (ctx.stdin.readline() if ctx.stdin else "").strip().lower()
        return answer in ("y", "yes") or (len(answer) >= 12 and fingerprint.startswith(answer))
    raise CommandError(f"The server certificate of {args.url} has fingerprint {fingerprint}; "
                       "pass --accept-certificate to trust it")


def _probe(url: str, server_pem: str, cert: tuple[str, str] | None) -> dict:
    with DeploymentsClient(url=url, verify=pinned_context(cadata=server_pem), cert=cert,
                           timeout=PROBE_TIMEOUT) as client:
        return client.get("/1.0").metadata or {}


def cmd_add(ctx: Context, args: argparse.Namespace) -> None:
    remotes = Remotes.load(ctx.environ)
    name = validate_remote_name(args.name)
    if name == LOCAL or name in remotes.remotes:
        raise CommandError(f'Remote "{name}" already exists')
    url = normalize_url(args.url)
    if ensure_key_pair(remotes.client_cert, remotes.client_key, default_client_name(),
                       server=False):
        ctx.say(f"Generated a client certificate in {remotes.directory}")
    server_pem = fetch_server_certificate(url)
    fingerprint = fingerprint_of_pem(server_pem)
    if not _accepted(ctx, args, fingerprint):
        raise CommandError("Server certificate NACKed by user")
    try:
        public = _probe(url, server_pem, None)
    except ClientError as err:
        raise CommandError(f"{url} does not answer as a deployments service: "
                           f"{err.message}") from err
    if (public.get("environment") or {}).get("server") != PROTOCOL:
        raise CommandError(f"{url} is not a deployments service")
    try:
        trusted = _probe(url, server_pem, (str(remotes.client_cert), str(remotes.client_key)))
    except ServiceUnreachable:
        trusted = {}  # the handshake was refused: our certificate is not trusted there
    path = remotes.server_cert(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(server_pem)
    remotes.remotes[name] = {"addr": url, "protocol": PROTOCOL, "auth-type": "tls"}
    if args.project:
        remotes.remotes[name]["project"] = args.project
    remotes.save()
    if trusted.get("auth") != "trusted":
        client_fingerprint = fingerprint_of_pem(remotes.client_cert.read_text())
        ctx.out(f'Remote {name} added, but it does not trust this client yet. On {name}, an '
                f"admin runs:\n  lxd-deployments trust add {remotes.client_cert} --type client"
                f"\n(client certificate fingerprint {client_fingerprint})")


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    remotes = Remotes.load(ctx.environ)
    rows = []
    for name in remotes.names():
        remote = remotes.require(name)
        address = remote.get("addr", "")
        if name == LOCAL:
            address = "unix://" + (ctx.environ.get(SOCKET_ENV)
                                   or "/var/lib/lxd-deployments/unix.socket")
        shown = f"{name} (current)" if name == remotes.default else name
        rows.append({"name": shown, "addr": address, "protocol": remote.get("protocol", ""),
                     "auth-type": remote.get("auth-type", ""),
                     "static": "YES" if name == LOCAL else "NO"})
    columns = (Column("NAME", field_cell("name")), Column("URL", field_cell("addr")),
               Column("PROTOCOL", field_cell("protocol")),
               Column("AUTH TYPE", field_cell("auth-type")),
               Column("STATIC", field_cell("static")))
    ctx.stdout.write(render_list(args.format, rows, columns))


def cmd_remove(ctx: Context, args: argparse.Namespace) -> None:
    remotes = Remotes.load(ctx.environ)
    if args.name == LOCAL:
        raise CommandError('Remote "local" is static and cannot be removed')
    remotes.require(args.name)
    if args.name == remotes.default:
        raise CommandError(f'Remote "{args.name}" is the default remote: switch to another '
                           "one first")
    del remotes.remotes[args.name]
    remotes.save()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(remotes.server_cert(args.name))


def cmd_switch(ctx: Context, args: argparse.Namespace) -> None:
    remotes = Remotes.load(ctx.environ)
    remotes.require(args.name)
    remotes.default = args.name
    remotes.save()


def cmd_get_default(ctx: Context, args: argparse.Namespace) -> None:
    ctx.out(Remotes.load(ctx.environ).default)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "add", cmd_add, "Add a remote deployments service",
        description="Add a remote service reached over HTTPS with this CLI's client "
        "certificate.\nThe server certificate is pinned once its fingerprint is accepted.")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("url", metavar="URL", help="https://host[:port] (port 8443 by default)")
    # (--project, the global flag, is saved as the remote's current project here.)
    parser.add_argument("--accept-certificate", action="store_true",
                        help="pin the server certificate without asking")

    parser = add_command(subparsers, "list", cmd_list, "List the remotes", aliases=["ls"])
    add_format_flag(parser)

    parser = add_command(subparsers, "remove", cmd_remove, "Remove a remote", aliases=["rm"])
    parser.add_argument("name", metavar="NAME")

    parser = add_command(subparsers, "switch", cmd_switch, "Set the default remote")
    parser.add_argument("name", metavar="NAME")

    add_command(subparsers, "get-default", cmd_get_default, "Print the default remote")
