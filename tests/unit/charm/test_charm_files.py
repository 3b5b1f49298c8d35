"""charmcraft.yaml, metadata.yaml, config.yaml and actions.yaml, validated by charmcraft's
own models exactly as `charmcraft pack` merges and reads them."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from charmcraft import linters
from charmcraft.models.config import JujuConfig
from charmcraft.models.metadata import CharmMetadataLegacy
from charmcraft.models.project import CharmcraftProject
from charmcraft.parts import setup_parts

from lxd_deployments_charm.options import DEFAULT_PORT, CharmOptions, parse_deployments

REPO = Path(__file__).resolve().parents[3]


def _load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_the_merged_project_is_valid_for_charmcraft() -> None:
    setup_parts()  # registers the `charm` plugin, as charmcraft does at start

    # As `charmcraft pack` reads it: charmcraft.yaml with the three files merged in.
    project = CharmcraftProject.from_yaml_file(REPO / "charmcraft.yaml")

    assert project.name == "lxd-deployments"
    assert set(project.platforms) == {"amd64", "arm64"}
    assert set(project.actions) == set(_load("actions.yaml"))
    assert set(project.config["options"]) == set(_load("config.yaml")["options"])


def test_metadata_and_config_validate() -> None:
    metadata = CharmMetadataLegacy.unmarshal(_load("metadata.yaml"))
    config = JujuConfig.model_validate(_load("config.yaml"))

    assert metadata.name == "lxd-deployments"
    assert metadata.provides["governor"]["interface"] == "lxd-deployments-governor"
    assert metadata.requires["lxd"]["interface"] == "lxd-https"
    assert metadata.requires["database"]["interface"] == "postgresql_client"
    assert metadata.requires["database"]["limit"] == 1
    assert metadata.provides["cos-agent"]["interface"] == "cos_agent"
    assert metadata.peers["cluster"]["interface"] == "lxd_deployments_cluster"
    assert set(config.options) == {"deployments", "listen-address", "port", "projects",
                                   "log-level", "workers"}


@pytest.mark.parametrize("linter", [linters.JujuMetadata, linters.JujuActions,
                                    linters.JujuConfig])
def test_charmcraft_linters_accept_the_files(linter) -> None:
    check = linter()

    assert check.run(REPO) == linters.LintResult.OK, check.text


def test_every_action_has_a_description_and_valid_parameter_schema() -> None:
    actions = _load("actions.yaml")

    assert set(actions) == {
        "create-key", "delete-key", "list-keys", "scale", "list-deployments", "show",
        "add-trusted-certificate", "remove-trusted-certificate", "force-delete-deployment",
        "force-delete-shape"}
    for name, action in actions.items():
        assert action["description"].strip(), name
        # Juju checks an action's params as this JSON schema.
        schema = {"type": "object", "properties": action.get("params", {}),
                  "required": action.get("required", []),
                  "additionalProperties": action.get("additionalProperties", True)}
        jsonschema.Draft7Validator.check_schema(schema)
        assert set(schema["required"]) <= set(schema["properties"]), name


def test_config_defaults_are_what_the_charm_expects() -> None:
    options = _load("config.yaml")["options"]
    defaults = {name: spec.get("default") for name, spec in options.items()}

    parsed = CharmOptions.model_validate({k.replace("-", "_"): v for k, v in defaults.items()})

    assert parsed.port == DEFAULT_PORT
    assert parsed.log_level == "info"


def test_the_example_in_the_deployments_option_parses() -> None:
    description = _load("config.yaml")["options"]["deployments"]["description"]
    example = description.split("Example:", 1)[1]

    spec = parse_deployments(example)

    assert set(spec.deployments["web"].shapes) == {"frontend", "workers"}


@pytest.mark.parametrize("name", ["charmcraft.yaml", "metadata.yaml", "config.yaml",
                                  "actions.yaml"])
def test_charm_files_are_plain_yaml_mappings(name: str) -> None:
    assert isinstance(_load(name), dict)


def test_the_charm_carries_every_runtime_dependency_of_the_service() -> None:
    def names(lines) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
                for line in lines if line.strip() and not line.strip().startswith("#")}

    pyproject = (REPO / "pyproject.toml").read_text()
    block = pyproject.split("\ndependencies = [", 1)[1].split("\n]", 1)[0]
    service = names(line.strip().strip(",").strip('"') for line in block.splitlines())
    charm = names((REPO / "requirements.txt").read_text().splitlines())

    assert service <= charm, f"add to requirements.txt: {sorted(service - charm)}"
    assert {"ops", "jinja2"} <= charm
