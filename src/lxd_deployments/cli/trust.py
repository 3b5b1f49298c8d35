"""`lxd-deployments trust ...`: the service's trust store, as `lxc config trust`.

Certificates of type `client` administer the service over HTTPS; certificates of type
`deployments` are what deployment keys point at.
"""

from __future__ import annotations

import argparse
import os
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from .context import Context, UsageError, api_path, as_list
from .files import read_text_file
from .filters import list_filters, matches
from .output import Column, dump_yaml, field_cell, render_list, short_cell
from .parsing import add_command, add_format_flag

CERTIFICATE_TYPES = ("client", "deployments", "metrics")
# As `lxc config trust add`: a new certificate is an admin's unless said otherwise.
DEFAULT_TYPE = "client"



def _x509(obj: dict) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(str(obj.get("certificate") or "").encode())
    except ValueError:
        return None


def _common_name(obj: dict) -> str:
    certificate = _x509(obj)
    if certificate is None:
        return ""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def lxc_date(moment: datetime) -> str:
    """A date as lxc's trust list prints it (Go's "Jan 2, 2006 at 3:04pm (MST)")."""
    hour = moment.hour % 12 or 12
    half = "am" if moment.hour < 12 else "pm"
    return f"{moment:%b} {moment.day}, {moment.year} at {hour}:{moment:%M}{half} (UTC)"


def _date_cell(attribute: str):
    def cell(obj: dict) -> str:
        certificate = _x509(obj)
        return "" if certificate is None else lxc_date(getattr(certificate, attribute))

    return cell


# lxc's columns, in lxc's order (scripts written for `lxc config trust list --format csv`
# read the name as the 2nd field and the fingerprint as the 4th).
TRUST_COLUMNS = (
    Column("TYPE", field_cell("type")),
    Column("NAME", field_cell("name")),
    Column("COMMON NAME", _common_name),
    Column("FINGERPRINT", short_cell("fingerprint")),
    Column("ISSUE DATE", _date_cell("not_valid_before_utc")),
    Column("EXPIRY DATE", _date_cell("not_valid_after_utc")),
)


def cmd_list(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get("/1.0/certificates", params={"recursion": "1"})
    filters = list_filters(args)
    shown = [obj for obj in as_list(answer.metadata) if matches(obj, filters)]
    ctx.stdout.write(render_list(args.format, shown, TRUST_COLUMNS))


def cmd_show(ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get(api_path("certificates", args.fingerprint))
    ctx.stdout.write(dump_yaml(answer.metadata))


def cmd_add(ctx: Context, args: argparse.Namespace) -> None:
    if args.remote_prefix:  # what was left of `peer:` (nothing) or a second file name
        raise UsageError(f'"{args.remote_prefix}" is neither a remote ("NAME:") nor the '
                         "only file")
    certificate = read_text_file(args.file, "certificate")
    # lxc names a certificate after its file (the whole base name, `dep1-key1.crt`)
    # when --name is not given.
    name = args.name or os.path.basename(args.file)
    body = {"name": name, "type": args.type, "certificate": certificate}
    ctx.client.post("/1.0/certificates", json=body)


def cmd_remove(ctx: Context, args: argparse.Namespace) -> None:
    ctx.client.delete(api_path("certificates", args.fingerprint))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "list", cmd_list, "List trusted certificates", aliases=["ls"])
    parser.add_argument("remote_prefix", metavar="[REMOTE:][FILTER]", nargs="?")
    parser.add_argument("filters", metavar="FILTER", nargs="*",
                        help="NAME (prefix or regular expression) or KEY=VALUE (type=client)")
    parser.set_defaults(extra_positionals="filters")
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
    # `trust add peer: FILE` names a remote first, as `lxc config trust add peer: FILE`.
    parser.add_argument("remote_prefix", metavar="[REMOTE:]", nargs="?")
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
