"""The CLI's pure helpers: table/CSV/YAML output and the YAML-to-body rules."""

from __future__ import annotations

import textwrap

import pytest

from lxd_deployments.cli.context import UsageError
from lxd_deployments.cli.editing import InvalidDocument, choose_editor, parse_document
from lxd_deployments.cli.output import Column, cell_text, dump_yaml, render_list, render_table
from lxd_deployments.cli.shapes import SHAPE, image_source


def test_table_cells_may_span_lines():
    table = render_table(["NAME", "IPV4"], [["c1", "10.0.0.1 (eth0)\n10.0.1.1 (eth1)"]])

    assert table == textwrap.dedent(
        """\
        +------+-----------------+
        | NAME |      IPV4       |
        +------+-----------------+
        | c1   | 10.0.0.1 (eth0) |
        |      | 10.0.1.1 (eth1) |
        +------+-----------------+
        """
    )


def test_empty_table_has_only_headers():
    columns = [Column("NAME", lambda obj: obj["name"])]

    assert render_list("table", [], columns) == "+------+\n| NAME |\n+------+\n"


def test_csv_quotes_cells_with_commas():
    columns = [Column("NAME", lambda obj: obj["name"]), Column("D", lambda obj: obj["d"])]

    assert render_list("csv", [{"name": "a", "d": "x, y"}], columns) == 'a,"x, y"\n'


@pytest.mark.parametrize(
    ("value", "text"), [(None, ""), (True, "true"), (3, "3"), ({"a": "b"}, "a: b")]
)
def test_cell_text(value, text):
    assert cell_text(value) == text


def test_yaml_keeps_field_order():
    assert dump_yaml({"name": "x", "description": "", "config": {}}) == (
        "name: x\ndescription: ''\nconfig: {}\n"
    )


@pytest.mark.parametrize(
    ("spec", "source"),
    [
        ("debian/12", {"type": "image", "alias": "debian/12"}),
        ("local:debian/12", {"type": "image", "alias": "debian/12"}),
        (
            "ubuntu-daily:24.04",
            {
                "type": "image",
                "mode": "pull",
                "server": "https://cloud-images.ubuntu.com/daily",
                "protocol": "simplestreams",
                "alias": "24.04",
            },
        ),
    ],
)
def test_image_source(spec, source):
    assert image_source(spec) == source


@pytest.mark.parametrize("spec", ["images:", "elsewhere:debian/12"])
def test_image_source_refuses_bad_specs(spec):
    with pytest.raises(UsageError):
        image_source(spec)


def test_document_must_be_a_mapping():
    with pytest.raises(InvalidDocument):
        parse_document("- a\n- b\n")


def test_shape_document_ignores_read_only_fields_and_stringifies_maps():
    document = {
        "name": "ignored",
        "scaling_current": 4,
        "scaling_maximum": 2,
        "instance_template": {"config": {"limits.memory": "1GiB", "security.nesting": True}},
    }

    body = SHAPE.body_from_document(document)

    assert body == {
        "instance_template": {"config": {"limits.memory": "1GiB", "security.nesting": "true"}},
        "scaling_maximum": 2,
    }


def test_create_only_fields_are_refused_outside_create():
    with pytest.raises(InvalidDocument):
        SHAPE.body_from_document({"from_profile": "default"})

    assert SHAPE.body_from_document({"from_profile": "p"}, creating=True) == {"from_profile": "p"}


def test_nested_config_values_must_be_scalars():
    with pytest.raises(InvalidDocument):
        SHAPE.body_from_document({"config": {"user.x": ["a"]}})


@pytest.mark.parametrize(
    ("environ", "command"),
    [({}, ["vi"]), ({"VISUAL": "nano"}, ["nano"]), ({"EDITOR": "code --wait"}, ["code", "--wait"])],
)
def test_editor_choice(environ, command):
    assert choose_editor(environ) == command
