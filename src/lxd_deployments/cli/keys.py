"""`lxd-deployments key ...`: the keys that let a governor act on one deployment."""

from __future__ import annotations

import argparse

from .context import Context, UsageError, api_path
from .editing import read_stdin_document
from .files import read_text_file
from .objects import STRING, ObjectKind, Property, add_object_commands
from .output import Column, field_cell, short_cell
from .parsing import add_command

# Least privilege unless asked: a read-only key can watch but not scale.
DEFAULT_ROLE = "ro"
ROLES = ("rw", "ro", "admin", "read-only")  # the seed's names are aliases of rw/ro
# `key unset D K role` gives the role back its default, as a new key gets it.
ROLE = Property(str, DEFAULT_ROLE)

KEY = ObjectKind(
    noun="key",
    dest="key_name",
    parents=("deployment",),
    collection=lambda args: api_path("deployments", args.deployment, "keys"),
    writable=("description", "role"),
    read_only=("name", "certificate_fingerprint"),
    properties={"description": STRING, "role": ROLE},
    columns=(
        Column("NAME", field_cell("name")),
        Column("ROLE", field_cell("role")),
        Column("FINGERPRINT", short_cell("certificate_fingerprint")),
        Column("DESCRIPTION", field_cell("description")),
    ),
    has_config=False,
    create_only=("certificate_fingerprint", "certificate"),
)

_CREATE_HELP = f"""\
Create a deployment key for a governor's certificate.

Name the certificate by the FINGERPRINT of a trusted certificate of type deployments
(see `lxd-deployments trust add --type deployments`), or give the PEM file with
--certificate to add it to the trust store in the same step. The role is rw (may launch
and delete instances) or ro (read only); default {DEFAULT_ROLE}.
"""


def cmd_create(ctx: Context, args: argparse.Namespace) -> None:
    if args.fingerprint and args.certificate:
        raise UsageError("give either FINGERPRINT or --certificate, not both")
    body = KEY.body_from_document(read_stdin_document(ctx), creating=True)
    body["name"] = args.key_name
    if args.fingerprint:
        body.pop("certificate", None)
        body["certificate_fingerprint"] = args.fingerprint
    elif args.certificate:
        body.pop("certificate_fingerprint", None)
        body["certificate"] = read_text_file(args.certificate, "certificate")
    elif not (body.get("certificate_fingerprint") or body.get("certificate")):
        raise UsageError("a certificate FINGERPRINT or --certificate FILE is required")
    if args.role is not None:
        body["role"] = args.role
    body.setdefault("role", DEFAULT_ROLE)
    if args.description is not None:
        body["description"] = args.description
    ctx.client.post(KEY.collection(args), json=body)
    ctx.say(f"Key {args.key_name} created")


def _add_create(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "create", cmd_create, "Create a deployment key", description=_CREATE_HELP
    )
    parser.add_argument("deployment", metavar="DEPLOYMENT")
    parser.add_argument("key_name", metavar="KEY")
    parser.add_argument("fingerprint", metavar="FINGERPRINT", nargs="?")
    parser.add_argument("--certificate", metavar="FILE", help="the governor's PEM certificate")
    parser.add_argument("--role", choices=ROLES, help=f"rw or ro (default {DEFAULT_ROLE})")
    parser.add_argument("--description", help="description of the key")


def register(subparsers: argparse._SubParsersAction) -> None:
    add_object_commands(subparsers, KEY, add_create=_add_create)
