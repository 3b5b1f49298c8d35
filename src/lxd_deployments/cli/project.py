"""`lxd-deployments project switch|get-current`: a current LXD project per remote, as
`lxc project switch` keeps one in lxc's remotes.

A command works in `--project` when given, else in its remote's current project, else
in LXD's `default` project.
"""

from __future__ import annotations

import argparse

from .context import Context
from .parsing import add_command
from .remotes import Remotes

DEFAULT_PROJECT = "default"


def _remote(args: argparse.Namespace, remotes: Remotes) -> str:
    """The remote named by a `REMOTE:` prefix or --remote, else the default one."""
    return getattr(args, "chosen_remote", None) or getattr(args, "remote", None) \
        or remotes.default


def cmd_switch(ctx: Context, args: argparse.Namespace) -> None:
    remotes = Remotes.load(ctx.environ)
    name = _remote(args, remotes)
    # Switching to `default` forgets the choice, so LXD's default applies again.
    project = None if args.project_name == DEFAULT_PROJECT else args.project_name
    remotes.set_project(name, project)
    remotes.save()
    ctx.say(f"Current project of remote {name}: {args.project_name}")


def cmd_get_current(ctx: Context, args: argparse.Namespace) -> None:
    remotes = Remotes.load(ctx.environ)
    ctx.out(remotes.project_of(_remote(args, remotes)) or DEFAULT_PROJECT)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "switch", cmd_switch, "Make a project the remote's current one",
        description="Make PROJECT the current project of REMOTE (default: the default "
        "remote):\ncommands without --project then work in it.")
    parser.add_argument("project_name", metavar="[REMOTE:]PROJECT")
    parser = add_command(subparsers, "get-current", cmd_get_current,
                         "Print the remote's current project")
    parser.add_argument("remote_prefix", metavar="[REMOTE:]", nargs="?")
