"""Every bad input gets a 4xx in LXD's envelope with a message naming what is wrong,
and nothing is written."""

from __future__ import annotations

import pytest

from .conftest import error_of


@pytest.fixture(autouse=True)
def _nothing_written(api):
    yield
    assert api.get("/1.0/deployments", params={"all-projects": 1}).json()["metadata"] == []


@pytest.mark.parametrize(("name", "message"), [
    ("", "Deployment name is required"),
    ("1web", "Deployment name must not start with a digit or a dash"),
    ("-web", "Deployment name must not start with a digit or a dash"),
    ("web-", "Deployment name must not end with a dash"),
    ("web_app", "Deployment name may only contain letters, digits and dashes"),
    ("wéb", "Deployment name may only contain letters, digits and dashes"),
    ("a" * 64, "Deployment name must be at most 63 characters long"),
    # `$` of `re.match` accepts a final newline: names are matched whole.
    ("web\n", "Deployment name may only contain letters, digits and dashes"),
    ("web\r\n", "Deployment name may only contain letters, digits and dashes"),
])
def test_bad_names(api, name, message):
    assert error_of(api.post("/1.0/deployments", json={"name": name})) == (400, message)


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "d", "config": {"limits.cpu": "1"}},
     'Unknown deployment configuration key "limits.cpu"'),
    ({"name": "d", "config": {"user.": "1"}}, 'Unknown deployment configuration key "user."'),
    ({"name": "d", "config": {"user.a": 1}}, 'Invalid value for "config.user.a": '
                                             "Input should be a valid string"),
    ({"name": "d", "governor_webhook_url": "ftp://x"},
     'Invalid value for "governor_webhook_url": governor_webhook_url must be an http:// or '
     "https:// URL"),
    ({"name": "d", "surprise": True}, 'Unknown field "surprise"'),
    ({"name": "d", "config": {"user.a\n": "1"}},
     "Invalid deployment configuration key 'user.a\\n': at most 255 characters, without "
     "control characters or surrounding whitespace"),
    ({"name": "d", "governor_webhook_url": "https://x/\n"},
     'Invalid value for "governor_webhook_url": governor_webhook_url must not contain '
     "whitespace or control characters"),
    ({"description": "no name"}, 'Missing field "name"'),
    ({"name": 7}, 'Invalid value for "name": Input should be a valid string'),
])
def test_bad_fields(api, body, message):
    assert error_of(api.post("/1.0/deployments", json=body)) == (400, message)


def test_malformed_json(api):
    status, message = error_of(api.post("/1.0/deployments", content=b'{"name": "d",'))
    assert status == 400
    assert message.startswith("Invalid JSON body")


def test_body_must_be_an_object(api):
    assert error_of(api.post("/1.0/deployments", content=b"[1]")) == (
        400, "The JSON body must be an object")


def test_missing_body(api):
    assert error_of(api.post("/1.0/deployments")) == (400, "A JSON body is required")


def test_form_content_type_is_still_read_as_json(api):
    response = api.post("/1.0/deployments", content=b'{"name": "d"}',
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 201
    api.delete("/1.0/deployments/d")


def test_oversized_body(api):
    body = b'{"name": "d", "description": "' + b"x" * 70_000 + b'"}'
    assert error_of(api.post("/1.0/deployments", content=body)) == (
        413, "Request body larger than 65536 bytes")


def test_bad_recursion(api):
    status, message = error_of(api.get("/1.0/deployments", params={"recursion": "x"}))
    assert status == 400
    assert "recursion" in message


def test_unknown_route_and_method(api):
    assert error_of(api.get("/1.0/nothing")) == (404, "Not found")
    assert error_of(api.put("/1.0/deployments", json={})) == (405, "Method not allowed")


def test_update_with_bad_config_keeps_old(api):
    api.post("/1.0/deployments", json={"name": "d", "config": {"user.a": "1"}})

    status, _ = error_of(api.put("/1.0/deployments/d", json={"config": {"bad": "1"}}))

    assert status == 400
    assert api.get("/1.0/deployments/d").json()["metadata"]["config"] == {"user.a": "1"}
    api.delete("/1.0/deployments/d")


def test_rename_to_bad_name(api):
    api.post("/1.0/deployments", json={"name": "d"})
    assert error_of(api.post("/1.0/deployments/d", json={"name": "9d"}))[0] == 400
    api.delete("/1.0/deployments/d")


@pytest.mark.parametrize(("method", "url", "params", "message"), [
    ("get", "/1.0/deployments", {"project": ""},
     'Invalid value for "project": String should have at least 1 character'),
    ("get", "/1.0/deployments", {"project": "p" * 64},
     'Invalid value for "project": String should have at most 63 characters'),
    ("get", "/1.0/deployments", {"all-projects": "maybe"},
     'Invalid value for "all-projects": Input should be a valid boolean, unable to interpret '
     "input"),
    ("get", "/1.0/deployments/d/shapes", {"recursion": 3},
     'Invalid value for "recursion": Input should be less than or equal to 2'),
    ("get", "/1.0/deployments/d/keys", {"recursion": -1},
     'Invalid value for "recursion": Input should be greater than or equal to 0'),
    ("get", "/1.0/certificates", {"recursion": "yes"},
     'Invalid value for "recursion": Input should be a valid integer, unable to parse string '
     "as an integer"),
    ("delete", "/1.0/deployments/d", {"force": "maybe"},
     'Invalid value for "force": Input should be a valid boolean, unable to interpret input'),
    ("delete", "/1.0/deployments/d/shapes/s", {"force": "maybe"},
     'Invalid value for "force": Input should be a valid boolean, unable to interpret input'),
])
def test_bad_query_options(api, method, url, params, message):
    assert error_of(getattr(api, method)(url, params=params)) == (400, message)


@pytest.mark.parametrize("url", ["/1.0/deployments/d", "/1.0/deployments/d/shapes/s",
                                 "/1.0/deployments/d/keys/k"])
def test_bodies_of_updates_are_checked_like_creations(api, url):
    assert error_of(api.patch(url, content=b"{")) == (
        400, "Invalid JSON body: Expecting property name enclosed in double quotes")
    assert error_of(api.put(url, content=b"[]")) == (400, "The JSON body must be an object")
    assert error_of(api.post(url, json={})) == (400, 'Missing field "name"')
    assert error_of(api.post(url, json={"name": "x", "extra": 1})) == (
        400, 'Unknown field "extra"')


def test_names_are_matched_whole_by_every_rule():
    """Every name rule of the codebase refuses a trailing newline (`re.match` with `$`
    would not): the service's, the project's, the CLI's remotes, the charm's result keys."""
    from lxd_deployments.cli.remotes import _NAME as REMOTE_NAME
    from lxd_deployments.core.capacity import parse_memory
    from lxd_deployments.errors import InvalidInput
    from lxd_deployments.names import validate_label, validate_name, validate_project
    from lxd_deployments_charm.actions import _RESULT_KEY

    for rule in (lambda n: validate_name(n, "X"), validate_project,
                 lambda n: validate_label(n, "X")):
        rule("web")
        with pytest.raises(InvalidInput):
            rule("web\n")
    assert REMOTE_NAME.fullmatch("prod") and not REMOTE_NAME.fullmatch("prod\n")
    assert _RESULT_KEY.fullmatch("web") and not _RESULT_KEY.fullmatch("web\n")
    assert parse_memory("1GiB") == parse_memory(" 1GiB\n") == 2**30
