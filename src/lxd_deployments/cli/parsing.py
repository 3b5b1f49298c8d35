"""argparse helpers: every leaf command knows its handler and parser, and takes the global
flags anywhere on the line (lxc accepts `--project` after the subcommand too)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .context import Context
from .output import DEFAULT_FORMAT, FORMATS

Handler = Callable[[Context, argparse.Namespace], int | None]

PROJECT_HELP = ("LXD project to work in (default: the remote's current one, see "
                "`project switch`, else default)")

# Global flags repeated on every subcommand. SUPPRESS keeps a subcommand from overwriting
# a value given before it with its own default.
_GLOBALS = argparse.ArgumentParser(add_help=False)
_GLOBALS.add_argument(
    "--project", default=argparse.SUPPRESS, help=PROJECT_HELP
)
_GLOBALS.add_argument(
    "--remote", default=argparse.SUPPRESS, metavar="NAME",
    help="remote service to talk to (default: the default remote, see `remote list`)"
)
_GLOBALS.add_argument(
    "-q",
    "--quiet",
    action="store_true",
    default=argparse.SUPPRESS,
    help="don't print confirmations or progress",
)


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """The global flags on the top-level parser, with their real defaults."""
    parser.add_argument("--project", default=None, help=PROJECT_HELP)
    parser.add_argument(
        "--remote", default=None, metavar="NAME",
        help="remote service to talk to (default: the default remote, see `remote list`)"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="don't print confirmations or progress"
    )


def add_group(
    subparsers: argparse._SubParsersAction, name: str, help_text: str
) -> argparse._SubParsersAction:
    """A command that only holds subcommands (`key`, `shape`, `trust`)."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text, parents=[_GLOBALS])
    children = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
    children.required = True
    return children


def add_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    help_text: str,
    *,
    description: str | None = None,
    aliases: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A leaf command; `args.handler(ctx, args)` runs it, `args.parser` reports its misuse."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        aliases=list(aliases),
        parents=[_GLOBALS],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def add_format_flag(parser: argparse.ArgumentParser) -> None:
    """`-f/--format` of every list command."""
    parser.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        default=DEFAULT_FORMAT,
        help=f"output format (default: {DEFAULT_FORMAT})",
    )
