"""The CLI's own logic: which requests each command sends, how it builds bodies from flags
and YAML, what it prints, and its exit codes.

The service is replaced by a scripted `httpx.MockTransport` that answers fixed envelopes
and records requests; it implements nothing of the service (that is tested end to end
against the real daemon).
"""

from __future__ import annotations

import io
import json
import sys
import textwrap
import types
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from lxd_deployments.cli.main import main
from lxd_deployments.client import DeploymentsClient

WEB = {
    "name": "web",
    "description": "Web farm",
    "config": {"user.team": "web", "user.tier": "1"},
    "governor_webhook_url": "",
    "deployment_shapes": {},
    "used_by": ["/1.0/deployments/web/keys/k1"],
}

FRONTEND = {
    "name": "frontend",
    "description": "",
    "config": {},
    "instance_template": {
        "type": "container",
        "source": {"type": "image", "alias": "debian/12"},
        "profiles": ["default"],
        "config": {},
        "devices": {},
        "ephemeral": False,
        "instance_type": "",
    },
    "scaling_minimum": 1,
    "scaling_maximum": 3,
    "scaling_current": 2,
}


def sync(metadata: Any, etag: str | None = None) -> httpx.Response:
    body = {"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}
    return httpx.Response(200, json=body, headers={"ETag": etag} if etag else {})


def error(code: int, message: str) -> httpx.Response:
    body = {"type": "error", "error_code": code, "error": message, "metadata": None}
    return httpx.Response(code, json=body)


def operation_created(op_id: str) -> httpx.Response:
    body = {
        "type": "async",
        "status": "Operation created",
        "status_code": 100,
        "operation": f"/1.0/operations/{op_id}",
        "metadata": {"id": op_id, "status": "Running", "status_code": 103},
    }
    return httpx.Response(202, json=body)


def operation_done(op_id: str, err: str = "") -> httpx.Response:
    status, code = ("Failure", 400) if err else ("Success", 200)
    return sync({"id": op_id, "status": status, "status_code": code, "err": err})


class FakeAPI:
    """Answers (method, path) from a script and records every request."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *responses: httpx.Response) -> None:
        """Answer with `responses` in turn; the last one repeats."""
        self.script[(method, path)] = list(responses)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        queue = self.script.get((request.method, request.url.path))
        if not queue:
            return error(404, f"unscripted {request.method} {request.url.path}")
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def client(self) -> DeploymentsClient:
        return DeploymentsClient(transport=httpx.MockTransport(self.handle))

    def sent(self, method: str, path: str | None = None) -> list[httpx.Request]:
        return [
            r for r in self.requests if r.method == method and (path is None or r.url.path == path)
        ]

    def body(self, method: str, path: str | None = None) -> Any:
        """The JSON body of the last such request."""
        return json.loads(self.sent(method, path)[-1].content)


class TerminalInput(io.StringIO):
    """Standard input that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(
    fake_api: FakeAPI,
    *argv: str,
    stdin: str | None = None,
    environ: dict[str, str] | None = None,
) -> Result:
    """Run the CLI; no `stdin` text means a terminal."""
    stdout, stderr = io.StringIO(), io.StringIO()
    stream = TerminalInput("\n" * 5) if stdin is None else io.StringIO(stdin)
    code = main(
        list(argv),
        client=fake_api.client(),
        stdin=stream,
        stdout=stdout,
        stderr=stderr,
        environ=environ or {},
    )
    return Result(code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def fake_api() -> FakeAPI:
    """A scripted stand-in for the service (named apart from conftest's real `api`)."""
    return FakeAPI()


# --- parsing and errors --------------------------------------------------------------------


def test_no_command_is_a_usage_error(fake_api):
    assert run(fake_api).code == 2


def test_help_exits_zero(fake_api):
    result = run(fake_api, "shape", "instance", "--help")

    assert result.code == 0
    assert "launch" in result.out


def test_api_error_prints_its_message_and_exits_1(fake_api):
    fake_api.on("GET", "/1.0/deployments/nope", error(404, "Deployment not found"))

    result = run(fake_api, "show", "nope")

    assert result.code == 1
    assert result.err == "Error: Deployment not found\n"


def test_unreachable_service_is_an_error_naming_the_socket(tmp_path):
    stderr = io.StringIO()

    code = main(
        ["list"],
        client=DeploymentsClient(tmp_path / "none.socket"),
        stdout=io.StringIO(),
        stderr=stderr,
    )

    assert code == 1
    assert stderr.getvalue().startswith("Error: Cannot reach the deployments service")
    assert "none.socket" in stderr.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ("--project", "tenant", "list"),
        ("list", "--project", "tenant"),
        ("shape", "--project", "tenant", "list", "web"),
    ],
)
def test_project_flag_is_sent_wherever_it_is_given(fake_api, argv):
    fake_api.on("GET", "/1.0/deployments", sync([]))
    fake_api.on("GET", "/1.0/deployments/web/shapes", sync([]))

    assert run(fake_api, *argv).code == 0

    assert fake_api.requests[0].url.params["project"] == "tenant"


def test_no_project_flag_leaves_the_server_default(fake_api):
    fake_api.on("GET", "/1.0/deployments", sync([]))

    run(fake_api, "list")

    assert "project" not in fake_api.requests[0].url.params


# --- list formats --------------------------------------------------------------------------


def test_list_table_counts_shapes_and_used_by_sorted_by_name(fake_api):
    fake_api.on("GET", "/1.0/deployments", sync([WEB, {**WEB, "name": "db", "used_by": []}]))

    result = run(fake_api, "list")

    assert fake_api.requests[0].url.params["recursion"] == "1"
    assert result.out == textwrap.dedent(
        """\
        +------+-------------+--------+---------+
        | NAME | DESCRIPTION | SHAPES | USED BY |
        +------+-------------+--------+---------+
        | db   | Web farm    | 0      | 0       |
        +------+-------------+--------+---------+
        | web  | Web farm    | 0      | 1       |
        +------+-------------+--------+---------+
        """
    )


def test_list_csv_has_no_header(fake_api):
    fake_api.on("GET", "/1.0/deployments", sync([WEB]))

    assert run(fake_api, "list", "--format", "csv").out == "web,Web farm,0,1\n"


@pytest.mark.parametrize(("fmt", "load"), [("json", json.loads), ("yaml", yaml.safe_load)])
def test_list_json_and_yaml_give_full_objects(fake_api, fmt, load):
    fake_api.on("GET", "/1.0/deployments", sync([WEB]))

    assert load(run(fake_api, "ls", "-f", fmt).out) == [WEB]


def test_unknown_format_is_a_usage_error(fake_api):
    assert run(fake_api, "list", "--format", "xml").code == 2


def test_shape_list_without_deployment_lists_every_deployments_shapes(fake_api):
    fake_api.on(
        "GET", "/1.0/deployments", sync([{**WEB, "deployment_shapes": {"frontend": FRONTEND}}])
    )

    result = run(fake_api, "shape", "list", "-f", "csv")

    assert result.out == "web,frontend,,1,3,2\n"


def test_key_list_shortens_fingerprints(fake_api):
    key = {"name": "k1", "description": "", "role": "rw", "certificate_fingerprint": "a" * 64}
    fake_api.on("GET", "/1.0/deployments/web/keys", sync([key]))

    assert run(fake_api, "key", "list", "web", "-f", "csv").out == "k1,rw,aaaaaaaaaaaa,\n"


# --- show / get ----------------------------------------------------------------------------


def test_show_prints_yaml(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB))

    assert yaml.safe_load(run(fake_api, "show", "web").out) == WEB


def test_get_prints_a_config_value_or_an_empty_line(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB))

    assert run(fake_api, "get", "web", "user.team").out == "web\n"
    assert run(fake_api, "get", "web", "user.absent").out == "\n"


def test_get_property_reads_nested_fields(fake_api):
    fake_api.on("GET", "/1.0/deployments/web/shapes/frontend", sync(FRONTEND))

    result = run(
        fake_api, "shape", "get", "web", "frontend", "instance_template.type", "--property"
    )

    assert result.out == "container\n"


def test_get_unknown_property_is_an_error(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB))

    result = run(fake_api, "get", "web", "colour", "-p")

    assert result.code == 1
    assert 'property "colour" does not exist' in result.err


# --- set / unset ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "changed"),
    [
        (("user.team=ops", "user.new=1"), {"user.team": "ops", "user.new": "1"}),
        (("user.team", "ops=x"), {"user.team": "ops=x"}),
    ],
    ids=["pairs", "key-value"],
)
def test_set_puts_the_writable_fields_with_if_match(fake_api, values, changed):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB, etag='"e1"'))
    fake_api.on("PUT", "/1.0/deployments/web", sync({}))

    assert run(fake_api, "set", "web", *values).code == 0

    put = fake_api.sent("PUT")[-1]
    assert put.headers["If-Match"] == '"e1"'
    body = json.loads(put.content)
    assert set(body) == {"description", "config", "governor_webhook_url"}
    assert body["config"] == {**WEB["config"], **changed}


def test_set_with_an_empty_value_removes_the_key(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB))
    fake_api.on("PUT", "/1.0/deployments/web", sync({}))

    run(fake_api, "set", "web", "user.tier=")

    assert fake_api.body("PUT")["config"] == {"user.team": "web"}


def test_set_value_dash_reads_standard_input(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB))
    fake_api.on("PUT", "/1.0/deployments/web", sync({}))

    run(fake_api, "set", "web", "user.motd", "-", stdin="hello\n")

    assert fake_api.body("PUT")["config"]["user.motd"] == "hello\n"


def test_set_without_equals_is_a_usage_error(fake_api):
    result = run(fake_api, "set", "web", "user.a=1", "user.b")

    assert result.code == 2
    assert "Invalid key=value configuration: user.b" in result.err
    assert fake_api.requests == []


def test_set_property_converts_to_the_fields_type(fake_api):
    fake_api.on("GET", "/1.0/deployments/web/shapes/frontend", sync(FRONTEND))
    fake_api.on("PUT", "/1.0/deployments/web/shapes/frontend", sync({}))

    run(
        fake_api,
        "shape",
        "set",
        "web",
        "frontend",
        "scaling_maximum=5",
        "instance_template.ephemeral=true",
        "--property",
    )

    body = fake_api.body("PUT")
    assert body["scaling_maximum"] == 5
    assert body["instance_template"]["ephemeral"] is True
    assert "scaling_current" not in body and "name" not in body


def test_set_property_with_a_bad_value_is_an_error(fake_api):
    fake_api.on("GET", "/1.0/deployments/web/shapes/frontend", sync(FRONTEND))

    result = run(fake_api, "shape", "set", "web", "frontend", "scaling_maximum=many", "-p")

    assert result.code == 1
    assert "not an integer" in result.err
    assert fake_api.sent("PUT") == []


def test_set_read_only_property_is_refused(fake_api):
    fake_api.on("GET", "/1.0/deployments/web/shapes/frontend", sync(FRONTEND))

    result = run(fake_api, "shape", "set", "web", "frontend", "scaling_current=9", "-p")

    assert result.code == 1
    assert "cannot be set" in result.err


def test_key_set_addresses_properties_without_the_flag(fake_api):
    key = {"name": "k1", "description": "", "role": "ro", "certificate_fingerprint": "ab"}
    fake_api.on("GET", "/1.0/deployments/web/keys/k1", sync(key))
    fake_api.on("PUT", "/1.0/deployments/web/keys/k1", sync({}))

    run(fake_api, "key", "set", "web", "k1", "role=rw")

    assert fake_api.body("PUT") == {"description": "", "role": "rw"}


def test_unset_puts_the_object_without_the_key(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB, etag='"e2"'))
    fake_api.on("PUT", "/1.0/deployments/web", sync({}))

    assert run(fake_api, "unset", "web", "user.tier").code == 0

    assert fake_api.body("PUT")["config"] == {"user.team": "web"}
    assert fake_api.sent("PUT")[-1].headers["If-Match"] == '"e2"'


def test_unset_of_a_missing_key_is_an_error(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB))

    result = run(fake_api, "unset", "web", "user.absent")

    assert result.code == 1
    assert "not currently set" in result.err
    assert fake_api.sent("PUT") == []


def test_unset_property_resets_it_to_its_zero_value(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync({**WEB, "governor_webhook_url": "https://g/h"}))
    fake_api.on("PUT", "/1.0/deployments/web", sync({}))

    run(fake_api, "unset", "web", "governor_webhook_url", "--property")

    assert fake_api.body("PUT")["governor_webhook_url"] == ""


# --- create --------------------------------------------------------------------------------


def test_create_merges_stdin_yaml_with_flags(fake_api):
    fake_api.on("POST", "/1.0/deployments", sync(None))
    document = "description: from yaml\nconfig:\n  user.a: 1\n  user.b: true\nname: ignored\n"

    result = run(
        fake_api, "create", "web", "--description", "from flag", "-c", "user.c=x", stdin=document
    )

    assert result.code == 0
    assert result.out == "Deployment web created\n"
    assert fake_api.body("POST") == {
        "name": "web",
        "description": "from flag",
        "config": {"user.a": "1", "user.b": "true", "user.c": "x"},
    }


def test_create_on_a_terminal_reads_no_yaml(fake_api):
    fake_api.on("POST", "/1.0/deployments", sync(None))

    run(fake_api, "create", "web", "--governor-webhook-url", "https://g.example/h")

    assert fake_api.body("POST") == {"name": "web", "governor_webhook_url": "https://g.example/h"}


def test_create_quiet_prints_nothing(fake_api):
    fake_api.on("POST", "/1.0/deployments", sync(None))

    assert run(fake_api, "-q", "create", "web").out == ""


def test_create_with_an_unknown_yaml_field_is_an_error(fake_api):
    result = run(fake_api, "create", "web", stdin="descripton: typo\n")

    assert result.code == 1
    assert "descripton" in result.err
    assert fake_api.requests == []


def test_create_with_invalid_yaml_is_an_error(fake_api):
    result = run(fake_api, "create", "web", stdin="config: [unclosed\n")

    assert result.code == 1
    assert result.err.startswith("Error: Invalid YAML")


def test_shape_create_defaults(fake_api):
    fake_api.on("POST", "/1.0/deployments/web/shapes", sync(None))

    run(fake_api, "shape", "create", "web", "frontend", "--from-image", "debian/12")

    assert fake_api.body("POST") == {
        "name": "frontend",
        "instance_template": {
            "type": "container",
            "source": {"type": "image", "alias": "debian/12"},
        },
        "scaling_minimum": 0,
        "scaling_maximum": 1,
    }


def test_shape_create_from_a_remote_image_as_a_vm(fake_api):
    fake_api.on("POST", "/1.0/deployments/web/shapes", sync(None))

    argv = ["shape", "create", "web", "frontend", "--from-image", "images:debian/12", "--vm"]
    run(fake_api, *argv, "--scaling-min", "1", "--scaling-max", "4", "--description", "front")

    body = fake_api.body("POST")
    assert body["instance_template"] == {
        "type": "virtual-machine",
        "source": {
            "type": "image",
            "mode": "pull",
            "server": "https://images.lxd.canonical.com",
            "protocol": "simplestreams",
            "alias": "debian/12",
        },
    }
    assert (body["scaling_minimum"], body["scaling_maximum"]) == (1, 4)
    assert body["description"] == "front"


def test_shape_create_from_profile_leaves_the_profile_to_the_server(fake_api):
    fake_api.on("POST", "/1.0/deployments/web/shapes", sync(None))

    run(fake_api, "shape", "create", "web", "frontend", "--from-profile", "big")

    body = fake_api.body("POST")
    assert body["from_profile"] == "big"
    assert "profiles" not in body["instance_template"]


def test_shape_create_with_an_unknown_remote_is_a_usage_error(fake_api):
    result = run(
        fake_api, "shape", "create", "web", "frontend", "--from-image", "nowhere:debian/12"
    )

    assert result.code == 2
    assert 'Unknown image remote "nowhere"' in result.err
    assert fake_api.requests == []


def test_shape_create_yaml_template_is_merged_with_flags(fake_api):
    fake_api.on("POST", "/1.0/deployments/web/shapes", sync(None))
    document = textwrap.dedent(
        """\
        scaling_maximum: 5
        instance_template:
          profiles: [default]
          config: {limits.cpu: 2}
          devices:
            root: {path: /, pool: default, size: 10GiB, boot.priority: 1}
        """
    )

    run(
        fake_api,
        "shape",
        "create",
        "web",
        "frontend",
        "--from-image",
        "ubuntu:22.04",
        stdin=document,
    )

    body = fake_api.body("POST")
    template = body["instance_template"]
    assert template["profiles"] == ["default"]
    assert template["config"] == {"limits.cpu": "2"}
    assert template["devices"]["root"]["boot.priority"] == "1"
    assert template["source"]["server"] == "https://cloud-images.ubuntu.com/releases"
    assert template["type"] == "container"
    assert (body["scaling_minimum"], body["scaling_maximum"]) == (0, 5)


def test_key_create_with_a_fingerprint_defaults_to_read_only(fake_api):
    fake_api.on("POST", "/1.0/deployments/web/keys", sync(None))

    result = run(fake_api, "key", "create", "web", "k1", "abcdef")

    assert result.out == "Key k1 created\n"
    assert fake_api.body("POST") == {
        "name": "k1",
        "certificate_fingerprint": "abcdef",
        "role": "ro",
    }


def test_key_create_with_a_certificate_file_sends_the_pem(fake_api, tmp_path):
    fake_api.on("POST", "/1.0/deployments/web/keys", sync(None))
    pem = tmp_path / "gov.crt"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")

    run(fake_api, "key", "create", "web", "k1", "--certificate", str(pem), "--role", "rw")

    body = fake_api.body("POST")
    assert body["certificate"] == pem.read_text()
    assert body["role"] == "rw"
    assert "certificate_fingerprint" not in body


@pytest.mark.parametrize(
    "extra", [(), ("abcdef", "--certificate", "x.crt")], ids=["neither", "both"]
)
def test_key_create_needs_exactly_one_certificate(fake_api, extra):
    result = run(fake_api, "key", "create", "web", "k1", *extra)

    assert result.code == 2
    assert fake_api.requests == []


def test_key_create_with_an_unreadable_certificate_is_an_error(fake_api, tmp_path):
    result = run(fake_api, "key", "create", "web", "k1", "--certificate", str(tmp_path / "no.crt"))

    assert result.code == 1
    assert "Cannot read certificate" in result.err


# --- edit ----------------------------------------------------------------------------------


def test_edit_from_stdin_puts_writable_fields_with_if_match(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB, etag='"e3"'))
    fake_api.on("PUT", "/1.0/deployments/web", sync({}))
    edited = yaml.safe_dump({**WEB, "description": "changed"})

    assert run(fake_api, "edit", "web", stdin=edited).code == 0

    put = fake_api.sent("PUT")[-1]
    assert put.headers["If-Match"] == '"e3"'
    assert json.loads(put.content) == {
        "description": "changed",
        "config": WEB["config"],
        "governor_webhook_url": "",
    }


def test_edit_from_empty_stdin_is_refused(fake_api):
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB))

    result = run(fake_api, "edit", "web", stdin="")

    assert result.code == 1
    assert fake_api.sent("PUT") == []


FAKE_EDITOR = """\
import pathlib, sys
path = pathlib.Path(sys.argv[1])
count = pathlib.Path(sys.argv[0]).with_suffix(".count")
runs = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(runs))
(pathlib.Path(sys.argv[0]).with_suffix(f".seen{runs}")).write_text(path.read_text())
path.write_text(path.read_text().replace("description: Web farm", "description: edited"))
"""


def test_edit_in_the_editor_reopens_after_an_error_and_keeps_the_changes(fake_api, tmp_path):
    editor = tmp_path / "editor.py"
    editor.write_text(FAKE_EDITOR)
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB, etag='"e4"'))
    fake_api.on("PUT", "/1.0/deployments/web", error(400, "Bad config key"), sync({}))

    result = run(fake_api, "edit", "web", environ={"EDITOR": f"{sys.executable} {editor}"})

    assert result.code == 0
    assert "Config parsing error: Bad config key" in result.err
    assert (tmp_path / "editor.count").read_text() == "2"
    assert (tmp_path / "editor.seen1").read_text().startswith("### This is a YAML")
    assert "description: edited" in (tmp_path / "editor.seen2").read_text()
    assert [json.loads(r.content)["description"] for r in fake_api.sent("PUT")] == ["edited"] * 2


def test_edit_stops_on_an_etag_mismatch(fake_api, tmp_path):
    editor = tmp_path / "editor.py"
    editor.write_text(FAKE_EDITOR)
    fake_api.on("GET", "/1.0/deployments/web", sync(WEB, etag='"e5"'))
    fake_api.on("PUT", "/1.0/deployments/web", error(412, "ETag doesn't match"))

    result = run(fake_api, "edit", "web", environ={"EDITOR": f"{sys.executable} {editor}"})

    assert result.code == 1
    assert result.err.endswith("Error: ETag doesn't match\n")
    assert (tmp_path / "editor.count").read_text() == "1"


# --- rename / delete -----------------------------------------------------------------------


def test_rename_posts_the_new_name(fake_api):
    fake_api.on("POST", "/1.0/deployments/web/shapes/frontend", sync(None))

    result = run(fake_api, "shape", "rename", "web", "frontend", "edge")

    assert fake_api.body("POST") == {"name": "edge"}
    assert result.out == "Shape frontend renamed to edge\n"


def test_delete_force_cascades(fake_api):
    fake_api.on("DELETE", "/1.0/deployments/web", sync(None))

    result = run(fake_api, "delete", "web", "--force")

    assert fake_api.requests[0].url.params["force"] == "1"
    assert result.out == "Deployment web deleted\n"


def test_key_delete_has_no_force(fake_api):
    assert run(fake_api, "key", "delete", "web", "k1", "--force").code == 2


# --- instances -----------------------------------------------------------------------------

INSTANCES = "/1.0/deployments/web/shapes/frontend/instances"


def test_instance_launch_waits_for_the_operation(fake_api):
    fake_api.on("POST", INSTANCES, operation_created("op1"))
    fake_api.on("GET", "/1.0/operations/op1/wait", operation_done("op1"))

    result = run(fake_api, "shape", "instance", "launch", "web", "frontend", "c1")

    assert result.code == 0
    assert fake_api.body("POST", INSTANCES) == {"instance_name": "c1"}
    assert fake_api.sent("GET")[-1].url.params["timeout"] == "-1"
    assert result.err == "Launching c1... done\n"


def test_instance_launch_failure_reports_the_operation_error(fake_api):
    fake_api.on("POST", INSTANCES, operation_created("op2"))
    fake_api.on("GET", "/1.0/operations/op2/wait", operation_done("op2", err="Image not found"))

    result = run(fake_api, "shape", "instance", "launch", "web", "frontend", "c1")

    assert result.code == 1
    assert result.err == "Launching c1... \nError: Image not found\n"


def test_instance_launch_past_the_bound_fails_at_once(fake_api):
    fake_api.on("POST", INSTANCES, error(409, "Shape frontend is at its scaling maximum (3)"))

    result = run(fake_api, "shape", "instance", "launch", "web", "frontend", "c9")

    assert result.code == 1
    assert "scaling maximum" in result.err


def test_instance_delete_waits(fake_api):
    fake_api.on("DELETE", f"{INSTANCES}/c1", operation_created("op3"))
    fake_api.on("GET", "/1.0/operations/op3/wait", operation_done("op3"))

    result = run(fake_api, "-q", "shape", "instance", "rm", "web", "frontend", "c1")

    assert result.code == 0
    assert result.err == ""


def test_instance_stop_force_sends_the_state_action(fake_api):
    fake_api.on("PUT", f"{INSTANCES}/c1/state", operation_created("op4"))
    fake_api.on("GET", "/1.0/operations/op4/wait", operation_done("op4"))

    run(fake_api, "shape", "instance", "stop", "web", "frontend", "c1", "--force")

    assert fake_api.body("PUT") == {"action": "stop", "force": True, "timeout": -1}


def test_instance_list_shows_state_and_global_addresses(fake_api):
    instance = {
        "name": "c1",
        "status": "Running",
        "type": "container",
        "state": {
            "network": {
                "eth0": {
                    "addresses": [
                        {"family": "inet", "address": "10.0.0.5", "scope": "global"},
                        {"family": "inet6", "address": "fe80::1", "scope": "link"},
                    ]
                },
                "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
            }
        },
    }
    fake_api.on("GET", INSTANCES, sync([instance]))

    result = run(fake_api, "shape", "instance", "list", "web", "frontend", "-f", "csv")

    assert result.out == "c1,RUNNING,10.0.0.5 (eth0),,CONTAINER\n"


# --- trust ---------------------------------------------------------------------------------


def test_trust_add_names_the_certificate_after_its_file(fake_api, tmp_path):
    fake_api.on("POST", "/1.0/certificates", sync(None))
    pem = tmp_path / "admin-laptop.crt"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")

    assert run(fake_api, "trust", "add", str(pem)).code == 0

    assert fake_api.body("POST") == {
        "name": "admin-laptop.crt",  # the whole base name, as lxc names it
        "type": "client",
        "certificate": pem.read_text(),
    }


def test_trust_add_type_deployments_with_a_name(fake_api, tmp_path):
    fake_api.on("POST", "/1.0/certificates", sync(None))
    pem = tmp_path / "gov.crt"
    pem.write_text("PEM")

    run(fake_api, "trust", "add", str(pem), "--type", "deployments", "--name", "governor")

    assert fake_api.body("POST")["type"] == "deployments"
    assert fake_api.body("POST")["name"] == "governor"


def test_trust_list_and_remove(fake_api):
    cert = {"fingerprint": "f" * 64, "name": "gov", "type": "deployments", "certificate": "PEM"}
    fake_api.on("GET", "/1.0/certificates", sync([cert]))
    fake_api.on("DELETE", "/1.0/certificates/ffff", sync(None))

    # lxc's columns: type, name, common name, fingerprint, issue and expiry dates.
    assert run(fake_api, "trust", "list", "-f", "csv").out == "deployments,gov,,ffffffffffff,,\n"
    assert run(fake_api, "trust", "remove", "ffff").code == 0


def test_trust_show_prints_the_pem_as_a_block(fake_api):
    pem = "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"
    cert = {"fingerprint": "ff", "name": "gov", "type": "deployments", "certificate": pem}
    fake_api.on("GET", "/1.0/certificates/ff", sync(cert))

    out = run(fake_api, "trust", "show", "ff").out

    assert "certificate: |\n  -----BEGIN CERTIFICATE-----\n" in out
    assert yaml.safe_load(out) == cert


# --- daemon --------------------------------------------------------------------------------


def test_daemon_runs_the_service_with_its_config(fake_api, monkeypatch):
    calls = []
    fake = types.ModuleType("lxd_deployments.daemon")
    fake.run = lambda config_path: calls.append(config_path)
    monkeypatch.setitem(sys.modules, "lxd_deployments.daemon", fake)

    assert run(fake_api, "daemon", "--config", "/etc/lxd-deployments.yaml").code == 0

    assert calls == ["/etc/lxd-deployments.yaml"]
    assert fake_api.requests == []
