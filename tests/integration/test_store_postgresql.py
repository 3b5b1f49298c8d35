"""The service on a PostgreSQL store (the private server of tests/postgres.py): two
service processes (two units) sharing one database keep one bound between them; a
wrong password, an unreachable server or a password in the URL stop the start with a
clear error that never shows the password.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import yaml

from .conftest import _service_env, free_port
from .helpers import API, accepted, ok, wait_operation

BUSYBOX = {"type": "image", "alias": "busybox"}
START_TIMEOUT = 60


def test_two_units_on_one_database_share_the_bound(services, postgres, lxd, lxd_project):
    first = services(store="postgresql")
    second = services(store="postgresql", **first.store_config, service_id=first.service_id)
    assert first.store_kind == second.store_kind == "postgresql"
    one, two = API(first.http, lxd_project), API(second.http, lxd_project)
    ok(one.post("/1.0/deployments", {"name": "dep"}), 201)
    # What one unit wrote, the other reads.
    ok(two.post("/1.0/deployments/dep/shapes", {
        "name": "web", "scaling_minimum": 0, "scaling_maximum": 3,
        "instance_template": {"source": BUSYBOX}}), 201)
    assert ok(one.get("/1.0/deployments/dep/shapes/web"))["scaling_maximum"] == 3

    barrier = threading.Barrier(10)

    def launch(n: int) -> httpx.Response:
        service = first if n % 2 else second
        with service.http_client(timeout=60.0) as http:
            http.get("/1.0")
            barrier.wait(timeout=60)
            return http.post("/1.0/deployments/dep/shapes/web/instances",
                             params={"project": lxd_project},
                             json={"instance_name": f"w{n}"})

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(launch, range(10)))
    launched = [a for a in answers if a.status_code == 202]
    assert len(launched) == 3, [(a.status_code, a.text) for a in answers]
    assert all(a.status_code == 409 for a in answers if a.status_code != 202)
    for answer in launched:
        operation = accepted(answer)
        http = first.http if operation["id"] in first.http.get(
            "/1.0/operations").text else second.http
        assert wait_operation(http, operation)["status"] == "Success"
    rows = first.query("SELECT count(*) FROM deployments_shapes_instances i JOIN "
                       "deployments_shapes s ON s.id = i.shape_id WHERE s.name = ?", "web")
    assert rows == [(3,)]
    assert len(lxd.instances(lxd_project)) == 3


def _start_fails(tmp_path, lxd, **config) -> tuple[int, str]:
    """Run the daemon on `config` until it exits; its exit code and its output."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"), "unix_socket": str(tmp_path / "unix.socket"),
        "lxd": {"socket": str(lxd.socket_path)}, **config}))
    done = subprocess.run([sys.executable, "-m", "lxd_deployments", "daemon", "--config",
                           str(path)], env=_service_env(), capture_output=True, text=True,
                          timeout=START_TIMEOUT, cwd=tmp_path)
    return done.returncode, done.stdout + done.stderr


def test_a_wrong_password_stops_the_start_without_showing_it(tmp_path, postgres, lxd):
    made = postgres.create_database()
    try:
        wrong = tmp_path / "wrong-password"
        wrong.write_text("Not-The-Password-7\n")
        wrong.chmod(0o600)
        code, output = _start_fails(tmp_path, lxd, database=made.url,
                                    database_password_file=str(wrong))
    finally:
        postgres.drop_database(made.name)
    assert code == 1, output
    assert "cannot open the store: " in output
    assert 'password authentication failed for user "lxdd"' in output
    assert "Not-The-Password-7" not in output and made.password not in output
    assert "Traceback" not in output


def test_an_unreachable_server_stops_the_start(tmp_path, lxd):
    code, output = _start_fails(tmp_path, lxd,
                                database=f"postgresql://lxdd@127.0.0.1:{free_port()}/x")
    assert code == 1, output
    assert "cannot open the store: " in output and "Connection refused" in output
    assert "Traceback" not in output


def test_a_password_in_the_url_is_a_config_error(tmp_path, lxd):
    code, output = _start_fails(tmp_path, lxd,
                                database="postgresql://lxdd:Inline-Secret-9@127.0.0.1/x")
    assert code == 1, output
    assert "database: the URL must not hold a password" in output
    assert "Inline-Secret-9" not in output
