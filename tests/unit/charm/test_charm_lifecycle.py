"""The charm's lifecycle: install, config, upgrade, removal, and the status it reports."""

from __future__ import annotations

import logging

import yaml
from ops import testing

from lxd_deployments_charm.paths import SERVICE_NAME


def _config(workload) -> dict:
    return yaml.safe_load(workload.paths.config_file.read_text())


def test_install_installs_renders_starts_and_opens_the_port(ctx, workload):
    state_out = ctx.run(ctx.on.install(), testing.State(leader=True))

    assert (workload.paths.current_release / "lxd_deployments" / "__init__.py").exists()
    assert not (workload.paths.current_release / "ops").exists()  # the charm's own
    assert workload.systemd.calls == [("daemon-reload", ""), ("enable", SERVICE_NAME),
                                      ("restart", SERVICE_NAME)]
    config = _config(workload)
    assert config["lxd"] == {"socket": str(workload.lxd_socket)}
    assert config["https_address"] == ":8444"  # every address
    assert config["state_dir"] == str(workload.paths.state_dir)
    assert workload.paths.config_file.stat().st_mode & 0o777 == 0o640
    unit = workload.paths.unit_file.read_text()
    assert f"PYTHONPATH={workload.paths.current_release}" in unit
    assert f"daemon --config {workload.paths.config_file}" in unit
    assert state_out.opened_ports == {testing.TCPPort(8444)}
    assert state_out.unit_status == testing.ActiveStatus("serving https://192.0.2.0:8444")


def test_nothing_changed_means_no_restart(ctx, workload):
    state = ctx.run(ctx.on.install(), testing.State(leader=True))
    calls_after_install = list(workload.systemd.calls)

    state_out = ctx.run(ctx.on.config_changed(), state)

    assert workload.systemd.calls == calls_after_install
    assert state_out.unit_status == testing.ActiveStatus("serving https://192.0.2.0:8444")


def test_a_changed_option_rewrites_the_config_and_restarts_once(ctx, workload):
    ctx.run(ctx.on.install(), testing.State(leader=True))

    state_out = ctx.run(ctx.on.config_changed(), testing.State(
        leader=True, config={"log-level": "debug", "projects": "p1, p2"}))

    assert workload.systemd.restarts == 2
    assert _config(workload)["log_level"] == "debug"
    assert _config(workload)["projects"] == ["p1", "p2"]
    assert state_out.unit_status == testing.ActiveStatus("serving https://192.0.2.0:8444")


def test_a_stopped_service_is_started_again(ctx, workload):
    state = ctx.run(ctx.on.install(), testing.State(leader=True))
    workload.systemd.active = False  # it died

    ctx.run(ctx.on.update_status(), state)

    assert workload.systemd.restarts == 2


def test_upgrade_charm_reinstalls_and_restarts_even_when_nothing_changed(ctx, workload):
    state = ctx.run(ctx.on.install(), testing.State(leader=True))
    old_release = workload.paths.current_release.resolve()
    (workload.sources.package / "new_module.py").write_text("")  # the new charm's code

    ctx.run(ctx.on.upgrade_charm(), state)
    ctx.run(ctx.on.upgrade_charm(), state)

    assert workload.paths.current_release.resolve() != old_release
    assert not old_release.exists()  # the old release is cleaned up
    assert (workload.paths.current_release / "lxd_deployments" / "new_module.py").exists()
    assert workload.systemd.restarts == 3


def test_port_zero_turns_https_off(ctx, workload):
    state_in = testing.State(leader=True, config={"port": 0},
                             opened_ports={testing.TCPPort(8444)})

    state_out = ctx.run(ctx.on.config_changed(), state_in)

    assert "https_address" not in _config(workload)
    assert state_out.opened_ports == frozenset()
    assert state_out.unit_status == testing.ActiveStatus(
        "serving on the unix socket only (port 0)")


def test_a_listen_address_is_the_endpoint(ctx, workload):
    state_out = ctx.run(ctx.on.config_changed(), testing.State(
        leader=True, config={"listen-address": "10.1.2.3", "port": 9443}))

    assert _config(workload)["https_address"] == "10.1.2.3:9443"
    assert state_out.unit_status == testing.ActiveStatus("serving https://10.1.2.3:9443")


def test_invalid_options_block_with_what_is_wrong_and_change_nothing(ctx, workload):
    state_in = testing.State(leader=True, config={"log-level": "loud",
                                                  "listen-address": "somewhere"})

    state_out = ctx.run(ctx.on.config_changed(), state_in)

    assert state_out.unit_status == testing.BlockedStatus(
        'invalid config: listen-address: "somewhere" is not an IP address; log-level: '
        "Input should be 'debug', 'info', 'warning' or 'error'")
    assert not workload.paths.config_file.exists()
    assert workload.systemd.calls == []


def test_no_lxd_on_the_machine_and_no_relation_blocks(ctx, workload):
    workload.lxd_socket = None

    state_out = ctx.run(ctx.on.install(), testing.State(leader=True))

    assert state_out.unit_status.name == "blocked"
    assert state_out.unit_status.message.startswith("no LXD on this machine")
    assert "relate to charm-lxd" in state_out.unit_status.message
    assert workload.systemd.restarts == 0


def test_a_service_that_does_not_answer_is_waited_for(ctx, workload):
    workload.service_up = False

    state_out = ctx.run(ctx.on.install(), testing.State(leader=True))

    assert state_out.unit_status.name == "waiting"
    assert state_out.unit_status.message.startswith("the service does not answer: ")
    assert "journalctl -u lxd-deployments" in state_out.unit_status.message


def test_non_leader_units_run_their_own_service(ctx, workload):
    state_out = ctx.run(ctx.on.install(), testing.State(leader=False))

    assert workload.systemd.restarts == 1
    assert state_out.unit_status == testing.ActiveStatus("serving https://192.0.2.0:8444")


def test_remove_deletes_our_files_only_and_keeps_the_state(ctx, workload):
    state = ctx.run(ctx.on.install(), testing.State(leader=True))
    workload.paths.state_dir.mkdir(parents=True, exist_ok=True)
    (workload.paths.state_dir / "database.sqlite3").write_text("records")

    ctx.run(ctx.on.remove(), state)

    assert ("stop", SERVICE_NAME) in workload.systemd.calls
    assert ("disable", SERVICE_NAME) in workload.systemd.calls
    for path in workload.paths.owned:
        assert not path.exists(), path
    assert (workload.paths.state_dir / "database.sqlite3").read_text() == "records"
    assert workload.lxd_socket is not None  # LXD itself is never touched


def test_an_action_leaves_the_status_of_the_last_reconcile(ctx, workload):
    blocked = testing.BlockedStatus("deployments: something to fix")

    state_out = ctx.run(ctx.on.action("list-deployments"),
                        testing.State(leader=True, unit_status=blocked))

    assert state_out.unit_status == blocked


def test_enable_is_retried_at_every_hook_until_it_succeeds(ctx, workload):
    workload.systemd.enable_failures = 2
    state = ctx.run(ctx.on.install(), testing.State(leader=True))
    assert state.unit_status.name == "waiting"
    assert "systemctl enable lxd-deployments failed" in state.unit_status.message

    state = ctx.run(ctx.on.update_status(), state)  # the unit file did not change
    state = ctx.run(ctx.on.update_status(), state)

    assert [c for c in workload.systemd.calls if c[0] == "enable"] == [
        ("enable", SERVICE_NAME)] * 3
    assert workload.systemd.enabled
    assert state.unit_status.name == "active"
    ctx.run(ctx.on.update_status(), state)
    assert len([c for c in workload.systemd.calls if c[0] == "enable"]) == 3  # no more


def test_status_messages_are_one_line(ctx, workload):
    state_out = ctx.run(ctx.on.config_changed(), testing.State(
        leader=True, config={"deployments": "web:\n  shapes:\n    - not\n    - a map\n"}))

    assert state_out.unit_status.name == "blocked"
    assert "\n" not in state_out.unit_status.message


def test_the_http_clients_debug_lines_stay_out_of_juju_log(ctx, workload):
    ctx.run(ctx.on.install(), testing.State(leader=True))

    logged = " ".join(line.message for line in ctx.juju_log)
    assert "HTTP Request" not in logged and "httpcore" not in logged
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING


def test_the_old_release_is_removed_only_once_the_new_one_answers(ctx, workload):
    state = ctx.run(ctx.on.install(), testing.State(leader=True))
    old_release = workload.paths.current_release.resolve()
    (workload.sources.package / "new_module.py").write_text("")
    workload.service_up = False  # the new release does not answer

    ctx.run(ctx.on.upgrade_charm(), state)

    assert old_release.exists()  # still there to go back to
    workload.service_up = True
    ctx.run(ctx.on.update_status(), state)
    assert not old_release.exists()
