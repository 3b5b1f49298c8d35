"""`lxd-deployments trust ...`: the service's trust store, as `lxc config trust`.

Certificates of type `client` administer the service over HTTPS; certificates of type
`deployments` are what deployment keys point at.
"""

from __future__ import annotations

import argparse
import os

from .context import Context, api_path, as_list
from .files import read_text_file
from .output import Column, dump_yaml, field_cell, render_list, short_cell
from .parsing import add_command, add_format_flag

CERTIFICATE_TYPES = ("client", "deployments", "metrics")
# As `lxc config trust add`: a new certificate is an admin's unless said otherwise.
DEFAULT_TYPE = "client"

TRUST_COLUMNS = (
    Column("NAME", field_cell("name")),
    Column("TYPE", field_cell("type")),
    Column("FINGERPRINT", short_cell("fingerprint")),
)


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get("/1.0/certificates", params={"recursion": "1"})
    ctx.stdout.write(render_list(args.format, as_list(answer.metadata), TRUST_COLUMNS))


def cmd_show(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get(api_path("certificates", args.fingerprint))
    ctx.stdout.write(dump_yaml(answer.metadata))


def cmd_add(ctx: Context, args: argparse.Namespace) -> None:
    certificate = read_text_file(args.file, "certificate")
    # lxc names a certificate after its file when --name is not given.
    name = args.name or os.path.splitext(os.path.basename(args.file))[0]
    body = {"name": name, "type": args.type, "certificate": certificate}
    ctx.client.post("/1.0/certificates", json=body)


def cmd_remove(ctx: Context, args: argparse.Namespace) -> None:
    ctx.client.delete(api_path("certificates", args.fingerprint))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "list", cmd_list, "List trusted certificates", aliases=["ls"])
    parser.add_argument("remote_prefix", metavar="[REMOTE:]", nargs="?")
    add_format_flag(parser)

    parser = add_command(subparsers, "show", cmd_show, "Show a trusted certificate")
    parser.add_argument("fingerprint", metavar="FINGERPRINT", help="fingerprint or unique prefix")

    parser = add_command(
        subparsers,
        "add",
        cmd_add,
        "Trust a certificate",
        description="Add a PEM certificate to the trust store. Type client (the default, "
        "as lxc) may administer the service; type deployments may back deployment keys.",
    )
    parser.add_argument("file", metavar="FILE", help="PEM certificate file")
    parser.add_argument("--name", help="name of the certificate (default: the file's name)")
    parser.add_argument(
        "--type",
        choices=CERTIFICATE_TYPES,
        default=DEFAULT_TYPE,
        help=f"certificate type (default {DEFAULT_TYPE})",
    )

    parser = add_command(
        subparsers, "remove", cmd_remove, "Remove a trusted certificate", aliases=["rm"]
    )
    parser.add_argument("fingerprint", metavar="FINGERPRINT", help="fingerprint or unique prefix")
