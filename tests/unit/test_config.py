"""The daemon's YAML configuration: defaults, LXD socket detection, and clear errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from lxd_deployments import config
from lxd_deployments.config import (
    DATABASE_PASSWORD_ENV,
    ConfigError,
    LXDSettings,
    Settings,
    database_password,
    load_settings,
)


@pytest.fixture
def write(tmp_path):
    def write_config(text: str) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return path

    return write_config


@pytest.fixture
def unix_socket(tmp_path):
    """Make a real (bound, not listening) unix socket file at `tmp_path/<name>/unix.socket`."""
    made = []

    def make(name: str) -> Path:
        path = tmp_path / name / "unix.socket"
        path.parent.mkdir(parents=True, exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        made.append(sock)
        return path

    yield make
    for sock in made:
        sock.close()


@pytest.fixture
def candidates(tmp_path, monkeypatch):
    """The snap and Debian socket paths moved under tmp_path; `$LXD_DIR` unset."""
    snap = tmp_path / "snap" / "unix.socket"
    debian = tmp_path / "debian" / "unix.socket"
    monkeypatch.setattr(config, "LXD_SOCKET_CANDIDATES", (snap, debian))
    monkeypatch.delenv("LXD_DIR", raising=False)
    return snap, debian


# --- defaults ---------------------------------------------------------------------------


def test_no_file_means_every_default(monkeypatch, tmp_path):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.yaml")

    settings = load_settings(None)

    assert settings == Settings()
    assert settings.state_dir == Path("/var/lib/lxd-deployments")
    assert settings.socket_path == Path("/var/lib/lxd-deployments/unix.socket")
    assert settings.database_path == Path("/var/lib/lxd-deployments/database.sqlite3")
    assert settings.unix_socket_mode == "0660"
    assert settings.log_level == "info"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.https_address is None
    assert settings.lxd == LXDSettings()
    assert (settings.lxd.socket, settings.lxd.url, settings.lxd.verify) == (None, None, True)


def test_the_default_file_is_read_when_present(monkeypatch, write):
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", write("log_level: debug\n"))
    assert load_settings(None).log_level == "debug"


@pytest.mark.parametrize("text", ["", "# nothing\n", "---\n"])
def test_an_empty_file_means_every_default(write, text):
    assert load_settings(write(text)) == Settings()


def test_values_from_the_file(write, tmp_path):
    settings = load_settings(write(f"""
state_dir: {tmp_path}/state
unix_socket: /run/lxd-deployments.socket
unix_socket_mode: "0600"
https_address: "[::]:8443"
log_level: warning
lxd:
  url: https://lxd.example:8443
  client_cert: /etc/lxd-deployments/client.crt
  client_key: /etc/lxd-deployments/client.key
  verify: false
"""))

    assert settings.state_dir == tmp_path / "state"
    assert settings.database_path == tmp_path / "state" / "database.sqlite3"
    assert settings.socket_path == Path("/run/lxd-deployments.socket")
    assert settings.unix_socket_mode == "0600"
    assert settings.https_address == "[::]:8443"
    assert settings.lxd.url == "https://lxd.example:8443"
    assert settings.lxd.client_cert == Path("/etc/lxd-deployments/client.crt")
    assert settings.lxd.verify is False


# --- LXD socket detection -----------------------------------------------------------------


def test_the_production_candidates_are_the_snap_then_debian():
    snap, debian = config.LXD_SOCKET_CANDIDATES
    assert snap == Path("/var/snap/lxd/common/lxd/unix.socket")
    assert debian == Path("/var/lib/lxd/unix.socket")


def test_lxd_dir_wins(candidates, unix_socket, monkeypatch):
    for name in ("snap", "debian"):
        unix_socket(name)
    own = unix_socket("own")
    monkeypatch.setenv("LXD_DIR", str(own.parent))

    assert LXDSettings().resolve_socket() == own


def test_snap_before_debian(candidates, unix_socket):
    snap = unix_socket("snap")
    unix_socket("debian")
    assert LXDSettings().resolve_socket() == snap


def test_debian_when_no_snap(candidates, unix_socket, monkeypatch, tmp_path):
    monkeypatch.setenv("LXD_DIR", str(tmp_path / "empty"))  # set, but nothing there
    debian = unix_socket("debian")
    assert LXDSettings().resolve_socket() == debian


def test_a_plain_file_is_not_a_socket(candidates, unix_socket):
    snap, _ = candidates
    snap.parent.mkdir()
    snap.write_text("")
    debian = unix_socket("debian")
    assert LXDSettings().resolve_socket() == debian


def test_an_explicit_socket_is_used_as_given(candidates):
    assert LXDSettings(socket=Path("/x/unix.socket")).resolve_socket() == Path("/x/unix.socket")


def test_no_socket_anywhere_lists_where_it_looked(candidates, monkeypatch, tmp_path):
    snap, debian = candidates
    monkeypatch.setenv("LXD_DIR", str(tmp_path / "own"))

    with pytest.raises(ConfigError) as raised:
        LXDSettings().resolve_socket()

    assert str(raised.value) == (
        f"no LXD socket found (looked at {tmp_path}/own/unix.socket, {snap}, {debian}); "
        "set lxd.socket or lxd.url")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "problem"), [
    ("surprise: 1\n", 'unknown key "surprise"'),
    ("lxd:\n  sockt: /x\n", 'unknown key "lxd.sockt"'),
    ("log_level: loud\n", "log_level: Input should be 'debug', 'info', 'warning' or 'error'"),
    ("unix_socket_mode: rw\n",
     "unix_socket_mode: unix_socket_mode must be an octal string such as '0660'"),
    ("lxd:\n  url: http://lxd.example\n", "lxd.url: lxd.url must be an https:// URL"),
    ("max_body_bytes: 0\n", "max_body_bytes: Input should be greater than 0"),
    ("state_dir: [a]\n", "state_dir: Input is not a valid path for <class 'pathlib.Path'>"),
    ("surprise: 1\nlog_level: loud\n",
     "log_level: Input should be 'debug', 'info', 'warning' or 'error'; "
     'unknown key "surprise"'),
])
def test_bad_values_are_named(write, text, problem):
    path = write(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value) == f"{path}: {problem}"


@pytest.mark.parametrize(("text", "problem"), [
    ("log_level: [debug\n", "invalid YAML at line 2, column 1: expected ',' or ']', "
                            "but got '<stream end>'"),
    ("lxd: a\n  url: b\n", "invalid YAML at line 2, column 6: mapping values are not allowed "
                           "here"),
    ("- a\n- b\n", "the configuration must be a YAML mapping"),
    ("just text\n", "the configuration must be a YAML mapping"),
])
def test_invalid_yaml_is_named(write, text, problem):
    path = write(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value) == f"{path}: {problem}"


def test_a_missing_file_given_explicitly_is_an_error(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value) == f"cannot read {path}: No such file or directory"


@pytest.mark.parametrize(("text", "bind"), [
    ("127.0.0.1:8443", ("127.0.0.1", 8443)),
    ("[::]:9443", ("::", 9443)),
    ("[::1]", ("::1", 8443)),
    ("::1", ("::1", 8443)),
    (":8443", ("", 8443)),
    ("10.0.0.1", ("10.0.0.1", 8443)),
    ("deployments.example:443", ("deployments.example", 443)),
])
def test_https_address_forms(text, bind):
    settings = Settings(https_address=text)
    assert settings.https_bind == bind
    assert config.parse_address(text) == bind


def test_https_files_default_to_the_state_dir_or_are_given(tmp_path):
    settings = Settings(state_dir=tmp_path)
    assert (settings.https_bind, settings.server_cert_path, settings.server_key_path) == (
        None, tmp_path / "server.crt", tmp_path / "server.key")
    given = Settings(state_dir=tmp_path, tls={"cert": "/etc/c.crt", "key": "/etc/c.key"})
    assert (given.server_cert_path, given.server_key_path) == (
        Path("/etc/c.crt"), Path("/etc/c.key"))


@pytest.mark.parametrize(("text", "problem"), [
    ("https_address: '127.0.0.1:http'\n",
     'https_address: "127.0.0.1:http": the port must be a number from 1 to 65535'),
    ("https_address: '[::1'\n", 'https_address: "[::1" is not an address: expected '
                                "[IPv6]:port"),
    ("https_address: '127.0.0.1:70000'\n",
     'https_address: "127.0.0.1:70000": the port must be a number from 1 to 65535'),
    ("tls:\n  cert: /etc/c.crt\n", "tls: tls.cert and tls.key go together: set both or "
                                   "neither"),
    ("tls:\n  password: x\n", 'unknown key "tls.password"'),
])
def test_bad_https_settings_are_named(write, text, problem):
    path = write(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value) == f"{path}: {problem}"


def test_service_id_from_the_settings_wins_over_the_kept_one(tmp_path):
    from lxd_deployments.daemon import service_id

    (tmp_path / "service-id").write_text("kept-id\n")
    assert service_id(Settings(state_dir=tmp_path)) == "kept-id"
    assert service_id(Settings(state_dir=tmp_path, service_id="app-id")) == "app-id"
    with pytest.raises(ValidationError):
        Settings(service_id="bad\n")


# --- the store: database URL and password -------------------------------------------------


def test_a_postgresql_database_is_accepted(write):
    settings = load_settings(write(
        "database: postgresql://deployments@db.example:5433/deployments\n"
        "database_password_file: /etc/lxd-deployments/db-password\n"))
    assert settings.database == "postgresql://deployments@db.example:5433/deployments"
    assert settings.database_password_file == Path("/etc/lxd-deployments/db-password")


def test_the_database_defaults_to_sqlite_in_the_state_dir(write):
    settings = load_settings(write("{}\n"))
    assert settings.database is None
    assert settings.database_password_file is None


@pytest.mark.parametrize(("url", "problem"), [
    ("mysql://u@h/db", "expected a postgresql://USER@HOST:PORT/DBNAME URL "
                       "(leave it unset for SQLite in state_dir)"),
    ("postgresql://u@h:99999/db", "not a valid URL (bad host or port)"),
    ("postgresql://h/db", "the URL must name the user (postgresql://USER@...)"),
    ("postgresql://u@h/", "the URL must name one database (.../DBNAME)"),
])
def test_bad_database_urls_are_named(write, url, problem):
    path = write(f"database: {url}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value) == f"{path}: database: {problem}"


def test_a_password_in_the_url_is_refused_and_never_repeated(write):
    path = write("database: postgresql://u:s3cret-pw@h:5432/db\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value) == (
        f"{path}: database: the URL must not hold a password; put it in the "
        "file named by database_password_file, or in $LXD_DEPLOYMENTS_DATABASE_PASSWORD")
    assert "s3cret-pw" not in str(raised.value)


def test_the_password_comes_from_the_file_first(tmp_path, monkeypatch, caplog):
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    secret.chmod(0o600)
    monkeypatch.setenv(DATABASE_PASSWORD_ENV, "from-env")
    settings = Settings(database="postgresql://u@h/db", database_password_file=secret)
    assert database_password(settings) == "from-file"
    assert "from-file" not in caplog.text
    assert caplog.records == []  # 0600: nothing to warn about


def test_a_password_file_others_can_read_is_warned_about(tmp_path, caplog):
    secret = tmp_path / "password"
    secret.write_text("pw")
    secret.chmod(0o644)
    settings = Settings(database="postgresql://u@h/db", database_password_file=secret)
    assert database_password(settings) == "pw"
    assert "(mode 0644): 0600 is recommended" in caplog.text
    assert "pw\n" not in caplog.text and "'pw'" not in caplog.text


def test_the_password_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv(DATABASE_PASSWORD_ENV, "from-env")
    assert database_password(Settings(database="postgresql://u@h/db")) == "from-env"
    monkeypatch.delenv(DATABASE_PASSWORD_ENV)
    assert database_password(Settings(database="postgresql://u@h/db")) is None


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_password_file_is_a_config_error(tmp_path, content):
    secret = tmp_path / "password"
    if content is not None:
        secret.write_text(content)
    settings = Settings(database="postgresql://u@h/db", database_password_file=secret)
    with pytest.raises(ConfigError) as raised:
        database_password(settings)
    assert str(raised.value).startswith("database_password_file: ")
    assert str(secret) in str(raised.value)
