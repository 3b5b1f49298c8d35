"""The verbs every object kind shares (list, show, get, set, unset, edit, rename, delete).

Deployments, shapes and keys differ only in their URL, their writable fields, the
properties `--property` may set and their table columns; an `ObjectKind` says that, and
the handlers here do the rest. `set` and `unset` GET the object and PUT its writable
fields back with `If-Match`, as lxc does: PATCH could not remove a config key.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .context import CommandError, Context, UsageError, as_list, if_match, url_part
from .editing import (
    InvalidDocument,
    edit_until_accepted,
    parse_document,
    string_map,
)
from .filters import list_filters, matches
from .output import Column, cell_text, dump_yaml, render_list
from .parsing import add_command, add_format_flag

_TRUE = frozenset({"1", "t", "true"})
_FALSE = frozenset({"0", "f", "false"})


def parse_bool(text: str) -> bool:
    """A boolean as Go's strconv.ParseBool (and so lxc) reads it."""
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true or false)")


def parse_int(text: str) -> int:
    """An integer property value."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


@dataclass(frozen=True)
class Property:
    """A field `set/unset --property` may change: how to read it and what unset means."""

    parse: Callable[[str], Any]
    # `unset --property` resets a field to its zero value, as lxc does, or to its
    # default where the zero value is not one (a key's role).
    zero: Any


STRING = Property(str, "")
INTEGER = Property(parse_int, 0)
BOOLEAN = Property(parse_bool, False)


@dataclass(frozen=True)
class ObjectKind:
    """What the shared verbs need to know about one kind of object."""

    noun: str  # "shape": used in messages and help
    dest: str  # argparse name of the object's positional argument
    parents: tuple[str, ...]  # argparse names of the parent objects' arguments
    collection: Callable[[argparse.Namespace], str]  # the collection's URL path
    writable: tuple[str, ...]  # what PUT replaces
    read_only: tuple[str, ...]  # shown by `show`, ignored in YAML given back
    properties: Mapping[str, Property]  # what --property may set (dotted paths)
    columns: tuple[Column, ...]
    has_config: bool = True
    create_only: tuple[str, ...] = ()  # extra fields a create body may carry
    # Extra checks/normalisation of a document's writable fields (e.g. a shape's template).
    normalise: Callable[[dict[str, Any]], None] | None = None
    forceable_delete: bool = False
    edit_help: str = field(default="")
    # Lines `show` adds after the YAML (as comments, so that the output can be edited
    # and fed back): e.g. a shape's placement group.
    show_extra: Callable[[Context, argparse.Namespace, dict[str, Any]], str] | None = None

    @property
    def title(self) -> str:
        return self.noun.capitalize()

    @property
    def metavar(self) -> str:
        return self.noun.upper().replace(" ", "_")

    def name_of(self, args: argparse.Namespace) -> str:
        return getattr(args, self.dest)

    def object_path(self, args: argparse.Namespace) -> str:
        return f"{self.collection(args)}/{url_part(self.name_of(args))}"

    def writable_body(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The writable part of an object from a GET, ready to be changed and PUT back."""
        return {name: copy.deepcopy(obj[name]) for name in self.writable if name in obj}

    def body_from_document(
        self, document: Mapping[str, Any], *, creating: bool = False
    ) -> dict[str, Any]:
        """The writable fields of a YAML document (from stdin or the editor).

        Read-only fields (`name`, `used_by`, ...) are ignored as lxc ignores them, so the
        output of `show` can be fed back; any other unknown field is an error, so a typo
        never passes silently.
        """
        allowed = set(self.writable) | set(self.read_only)
        if creating:
            allowed |= set(self.create_only)
        unknown = sorted(str(key) for key in document if key not in allowed)
        if unknown:
            raise InvalidDocument(
                f"Unknown field(s) for a {self.noun}: {', '.join(unknown)} "
                f"(writable: {', '.join(self.writable)})"
            )
        body = {key: document[key] for key in self.writable if key in document}
        if creating:
            body.update({key: document[key] for key in self.create_only if key in document})
        if "config" in body:
            body["config"] = string_map(body["config"], "config")
        if self.normalise is not None:
            self.normalise(body)
        return body


# --- helpers -----------------------------------------------------------------------------


def parse_pairs(items: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` items (`-c` flags), each with an `=`."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"Invalid key=value configuration: {item}")
        values[key] = value
    return values


def parse_assignments(items: Sequence[str], ctx: Context) -> dict[str, str]:
    """`KEY=VALUE...` or `KEY VALUE`, as lxc's getConfig reads them; a VALUE of `-` is
    read from standard input when that is not a terminal."""
    single = len(items) == 2 and "=" not in items[0]
    values = {items[0]: items[1]} if single else parse_pairs(items)
    for key, value in values.items():
        if value == "-" and not ctx.stdin_is_tty():
            assert ctx.stdin is not None
            values[key] = ctx.stdin.read()
    return values


def lookup(obj: Any, path: str) -> Any:
    """A field by dotted path (`instance_template.type`); CommandError when absent."""
    value = obj
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise CommandError(f'The property "{path}" does not exist')
        value = value[part]
    return value


def assign(body: dict[str, Any], path: str, value: Any) -> None:
    """Set a field by dotted path, creating intermediate maps."""
    *parents, last = path.split(".")
    target = body
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def settable_property(kind: ObjectKind, name: str) -> Property:
    """The Property for `name`, or a CommandError listing what can be set."""
    spec = kind.properties.get(name)
    if spec is None:
        raise CommandError(
            f'The property "{name}" does not exist or cannot be set '
            f"(settable: {', '.join(kind.properties)})"
        )
    return spec


def uses_properties(kind: ObjectKind, args: argparse.Namespace) -> bool:
    """Keys have no config map, so for them every get/set/unset addresses a property."""
    return bool(getattr(args, "property", False)) or not kind.has_config


# --- handlers ----------------------------------------------------------------------------


def cmd_list(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get(kind.collection(args), params={"recursion": "1"})
    filters = list_filters(args)
    shown = [obj for obj in as_list(answer.metadata) if matches(obj, filters)]
    ctx.stdout.write(render_list(args.format, shown, kind.columns))


def cmd_show(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    answer = ctx.client.get(kind.object_path(args))
    ctx.stdout.write(dump_yaml(answer.metadata))
    if kind.show_extra is not None:
        ctx.stdout.write(kind.show_extra(ctx, args, answer.metadata or {}))


def cmd_get(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    obj = ctx.client.get(kind.object_path(args)).metadata or {}
    if uses_properties(kind, args):
        ctx.out(cell_text(lookup(obj, args.config_key)))
    else:
        ctx.out(str((obj.get("config") or {}).get(args.config_key, "")))


def cmd_set(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    values = parse_assignments(args.assignments, ctx)
    path = kind.object_path(args)
    answer = ctx.client.get(path)
    body = kind.writable_body(answer.metadata or {})
    if uses_properties(kind, args):
        for name, text in values.items():
            try:
                assign(body, name, settable_property(kind, name).parse(text))
            except ValueError as err:
                raise CommandError(f'Invalid value for "{name}": {err}') from err
    else:
        config = body.setdefault("config", {})
        for key, value in values.items():
            # An empty value removes the key, as `lxc config set KEY=` does.
            if value == "":
                config.pop(key, None)
            else:
                config[key] = value
    ctx.client.put(path, json=body, headers=if_match(answer.etag))


def cmd_unset(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    path = kind.object_path(args)
    answer = ctx.client.get(path)
    body = kind.writable_body(answer.metadata or {})
    for name in args.config_keys:
        if uses_properties(kind, args):
            assign(body, name, settable_property(kind, name).zero)
            continue
        config = body.setdefault("config", {})
        if name not in config:
            raise CommandError(f"Can't unset key '{name}', it's not currently set")
        del config[name]
    ctx.client.put(path, json=body, headers=if_match(answer.etag))


def cmd_edit(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    path = kind.object_path(args)
    answer = ctx.client.get(path)

    def apply(document: dict[str, Any]) -> None:
        body = kind.body_from_document(document)
        ctx.client.put(path, json=body, headers=if_match(answer.etag))

    if not ctx.stdin_is_tty():
        assert ctx.stdin is not None
        apply(parse_document(ctx.stdin.read(), allow_empty=False))
        return
    text = edit_header(kind) + dump_yaml(answer.metadata)
    edit_until_accepted(ctx, text, apply)


def edit_header(kind: ObjectKind) -> str:
    """The comment lxc puts above the YAML in the editor."""
    lines = [
        f"### This is a YAML representation of the {kind.noun}.",
        "### Any line starting with a '# will be ignored.",
        "###",
        f"### Only {', '.join(kind.writable)} can be changed; other fields are ignored.",
    ]
    lines += [f"### {line}" if line else "###" for line in kind.edit_help.splitlines()]
    return "\n".join(lines) + "\n"


def cmd_rename(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    ctx.client.post(kind.object_path(args), json={"name": args.new_name})
    ctx.say(f"{kind.title} {kind.name_of(args)} renamed to {args.new_name}")


def cmd_delete(kind: ObjectKind, ctx: Context, args: argparse.Namespace) -> None:
    params = {"force": "1"} if getattr(args, "force", False) else None
    ctx.client.delete(kind.object_path(args), params=params)
    ctx.say(f"{kind.title} {kind.name_of(args)} deleted")


# --- parser wiring -----------------------------------------------------------------------


def add_positionals(parser: argparse.ArgumentParser, kind: ObjectKind) -> None:
    """The parent objects' names, then this object's name."""
    for parent in kind.parents:
        parser.add_argument(parent, metavar=parent.upper())
    parser.add_argument(kind.dest, metavar=kind.metavar)


def add_parent_positionals(parser: argparse.ArgumentParser, kind: ObjectKind) -> None:
    for parent in kind.parents:
        parser.add_argument(parent, metavar=parent.upper())
    if not kind.parents:  # `list prod:` names a remote, as `lxc list prod:`
        parser.add_argument("remote_prefix", metavar="[REMOTE:][FILTER]", nargs="?")
        parser.add_argument(
            "filters", metavar="FILTER", nargs="*",
            help="NAME (a name prefix or regular expression) or KEY=VALUE (a config key "
            "or field); all must match, as in `lxc list`")
        parser.set_defaults(extra_positionals="filters")


def add_object_commands(
    subparsers: argparse._SubParsersAction,
    kind: ObjectKind,
    *,
    add_create: Callable[[argparse._SubParsersAction], None],
    add_list: Callable[[argparse._SubParsersAction], None] | None = None,
) -> None:
    """Register the shared verbs for `kind`, with its own `create` (and, if given, its own
    `list`) in lxc's help order."""
    noun = kind.noun
    if kind.has_config:
        one, many = "config key or property", "config keys or properties"
    else:
        one, many = "property", "properties"
    if kind.has_config:
        property_help = (
            f"address a field of the {noun} ({', '.join(kind.properties)}) rather than a config key"
        )
        pair, empty_note = "KEY=VALUE", "\nAn empty VALUE removes a config key."
    else:
        property_help = f"accepted for symmetry: a {noun} has only properties"
        pair, empty_note = "PROPERTY=VALUE", ""

    if add_list is not None:
        add_list(subparsers)
    else:
        parser = add_command(
            subparsers, "list", partial(cmd_list, kind), f"List {noun}s", aliases=["ls"]
        )
        add_parent_positionals(parser, kind)
        add_format_flag(parser)

    parser = add_command(subparsers, "show", partial(cmd_show, kind), f"Show a {noun} as YAML")
    add_positionals(parser, kind)

    add_create(subparsers)

    parser = add_command(
        subparsers,
        "get",
        partial(cmd_get, kind),
        f"Get a {noun}'s {one}",
        description=f"Print the value of a {noun}'s {one}.\nWith --property: any field, "
        "nested ones by dotted path (e.g. instance_template.type).",
    )
    add_positionals(parser, kind)
    parser.add_argument("config_key", metavar="KEY" if kind.has_config else "PROPERTY")
    parser.add_argument("-p", "--property", action="store_true", help=property_help)

    parser = add_command(
        subparsers,
        "set",
        partial(cmd_set, kind),
        f"Set {noun} {many}",
        description=f"Set {noun} {many}: KEY=VALUE... or KEY VALUE.\n"
        f"A VALUE of '-' reads standard input.{empty_note}",
    )
    add_positionals(parser, kind)
    parser.add_argument("assignments", nargs="+", metavar=pair)
    parser.add_argument("-p", "--property", action="store_true", help=property_help)

    parser = add_command(
        subparsers,
        "unset",
        partial(cmd_unset, kind),
        f"Unset {noun} {many}",
        description=f"Remove {noun} {many}.\nA property is reset to its zero value "
        "(empty text, 0, false), or its default where it has one (a key's role: ro).",
    )
    add_positionals(parser, kind)
    parser.add_argument("config_keys", nargs="+", metavar="KEY" if kind.has_config else "PROPERTY")
    parser.add_argument("-p", "--property", action="store_true", help=property_help)

    parser = add_command(
        subparsers,
        "edit",
        partial(cmd_edit, kind),
        f"Edit a {noun} as YAML",
        description=f"Edit a {noun} in $EDITOR, or replace its writable fields with the\n"
        f"YAML on standard input: lxd-deployments ... edit ... < {noun}.yaml",
    )
    add_positionals(parser, kind)

    parser = add_command(
        subparsers, "rename", partial(cmd_rename, kind), f"Rename a {noun}", aliases=["mv"]
    )
    add_positionals(parser, kind)
    parser.add_argument("new_name", metavar=f"NEW_{kind.metavar}")

    parser = add_command(
        subparsers, "delete", partial(cmd_delete, kind), f"Delete a {noun}", aliases=["rm"]
    )
    add_positionals(parser, kind)
    if kind.forceable_delete:
        parser.add_argument(
            "--force",
            action="store_true",
            help=f"also delete the {noun}'s instances (otherwise refused while it has any)",
        )
