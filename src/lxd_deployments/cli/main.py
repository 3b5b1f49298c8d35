"""Entry point of `lxd-deployments`: builds the command tree, runs one command, and turns
every failure into lxc's `Error: ...` on stderr with exit status 1 (usage errors: 2)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import TextIO

from lxd_deployments import __version__
from lxd_deployments.client import ClientError, DeploymentsClient, ServiceUnreachable

from . import (
    copy_store,
    deployments,
    governor_sockets,
    keys,
    pets,
    placement_groups,
    project,
    remote,
    shapes,
    trust,
    webhooks,
)
from .context import CommandError, Context, UsageError
from .editing import InvalidDocument
from .parsing import add_command, add_global_flags, add_group
from .remotes import LOCAL, Remotes, split_remote_prefix

_DESCRIPTION = """\
Manage the LXD Deployments API: deployments, their shapes and keys, and the trust store.

The service is reached on its unix socket ($LXD_DEPLOYMENTS_SOCKET, else
/var/lib/lxd-deployments/unix.socket), or over HTTPS as a remote added with
`lxd-deployments remote add`: name it with a prefix (`lxd-deployments list prod:`,
`lxd-deployments show prod:web`) or --remote, or make it the default (`remote switch`).
"""

# Exit status after ctrl+c, as a shell reports a SIGINT death.
_INTERRUPTED = 130


def cmd_daemon(ctx: Context, args: argparse.Namespace) -> int:
    """Run the service in the foreground (the charm's systemd unit runs this)."""
    # Imported here: the CLI must start without loading the server stack.
    from lxd_deployments.daemon import run

    result = run(args.config)
    return result if isinstance(result, int) else 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (see `lxd-deployments --help`)."""
    parser = argparse.ArgumentParser(
        prog="lxd-deployments",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_global_flags(parser)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True

    deployments.register(subparsers)
    keys.register(add_group(subparsers, "key", "Manage deployment keys"))
    shape_group = add_group(subparsers, "shape", "Manage deployment shapes and instances")
    shapes.register(shape_group)
    webhooks.register_shape_commands(shape_group)
    placement_groups.register(add_group(subparsers, "placement-group",
                                        "Manage placement groups (affinity across members)"))
    pets.register(add_group(subparsers, "pet",
                            "Manage pets (members lent while their schedule is idle)"))
    trust.register(add_group(subparsers, "trust", "Manage trusted certificates"))
    remote.register(add_group(subparsers, "remote", "Manage remote deployments services"))
    project.register(add_group(subparsers, "project", "The current LXD project of a remote"))
    webhooks.register(add_group(subparsers, "webhook", "Webhook deliveries and secrets"))
    governor_sockets.register(add_group(subparsers, "governor-socket",
                                        "Expose the in-instance socket to governor containers"))

    daemon = add_command(subparsers, "daemon", cmd_daemon, "Run the deployments service")
    daemon.add_argument("--config", metavar="FILE", help="service configuration file")
    copy_store.register(subparsers)
    return parser


def parse_command_line(parser: argparse.ArgumentParser,
                       argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse as lxc (cobra) does: a command's trailing positionals (`create D --description
    X KEY=VALUE...`, `list -f csv FILTER`) may come after its flags. argparse stops a
    `nargs="*"` positional at the first flag; the rest comes back unrecognised and goes
    to the command's `extra_positionals` list, when it has one. Unknown flags stay
    errors."""
    args, extra = parser.parse_known_args(argv)
    dest = getattr(args, "extra_positionals", None)
    if extra and (dest is None or any(item.startswith("-") for item in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        setattr(args, dest, [*(getattr(args, dest, None) or []), *extra])
    return args


def main(
    argv: Sequence[str] | None = None,
    *,
    client: DeploymentsClient | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one command and return its exit status. Tests pass `client` (with a fake
    transport) and the streams; the console script passes nothing."""
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            args = parse_command_line(parser, argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2

    chosen_remote: str | None = None

    def make_client() -> DeploymentsClient:
        nonlocal chosen_remote
        if client is not None:
            base, project_name = client, args.project
        else:
            remotes = Remotes.load(ctx.environ)
            chosen_remote = chosen_remote or getattr(args, "remote", None) or remotes.default
            base = remotes.client(chosen_remote, ctx.environ)
            # --project wins over the remote's current project (`project switch`).
            project_name = args.project or remotes.project_of(chosen_remote)
        return base.use_project(project_name) if project_name else base

    ctx = Context(
        client_factory=make_client,
        stdin=stdin if stdin is not None else sys.stdin,
        stdout=stdout,
        stderr=stderr,
        environ=environ if environ is not None else os.environ,
        quiet=args.quiet,
    )
    try:
        chosen_remote = split_remote_prefix(args)
        args.chosen_remote = chosen_remote
        return int(args.handler(ctx, args) or 0)
    except UsageError as err:
        args.parser.print_usage(stderr)
        stderr.write(f"{args.parser.prog}: error: {err}\n")
        return 2
    except ClientError as err:
        stderr.write(f"Error: {err.message}\n")
        if isinstance(err, ServiceUnreachable) and chosen_remote not in (None, LOCAL):
            stderr.write("(a remote refuses the TLS handshake of a client certificate it "
                         "does not trust: see `lxd-deployments remote list`)\n")
        return 1
    except (CommandError, InvalidDocument) as err:
        stderr.write(f"Error: {err}\n")
        return 1
    except KeyboardInterrupt:
        stderr.write("\n")
        return _INTERRUPTED
    finally:
        if client is None:
            ctx.close_client()
