"""A private LXD daemon for the integration tests: its own `LXD_DIR`, a `dir` storage pool,
no network, and a tiny busybox image (alias `busybox`) built by scripts/build-busybox-image.

    lxd = PrivateLXD.create()        # a fresh temporary LXD_DIR
    lxd.start()
    lxd.import_busybox()
    lxd.create_project("p1")
    lxd.lxc("profile", "list", "--project", "p1")
    lxd.stop()                       # shuts it down and removes LXD_DIR

It needs root and Debian's `lxd` package (or the snap). A missing `lxd` is an error
with instructions, never a reason to skip: these tests are how the service is known to
work against a real LXD.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import ssl
import subprocess
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGE = REPO / "scripts" / "build-busybox-image"
BUSYBOX_ALIAS = "busybox"

# Where lxd lives besides $PATH: Debian's package, and the snap.
LXD_LOCATIONS = (Path("/usr/sbin"), Path("/usr/bin"), Path("/snap/bin"))

# Only a dir storage pool and a root disk: `lxd init --auto` also wants a bridge, and a
# test machine may have no free subnet for one. Instances need no network here.
PRESEED = """\
storage_pools:
- name: default
  driver: dir
profiles:
- name: default
  devices:
    root:
      path: /
      pool: default
      type: disk
"""

START_TIMEOUT = 60
COMMAND_TIMEOUT = 120
SHUTDOWN_TIMEOUT = 30

# Clients of unix sockets never use TLS: one context for all, not one per client.
_PLAIN_HTTP = ssl.create_default_context()

INSTALL_HINT = (
    "The integration tests start their own LXD daemon and need Debian's `lxd` package "
    "(apt-get install lxd busybox-static; or run scripts/install-deps as root)."
)


class HarnessError(RuntimeError):
    """The private LXD could not be started or driven; the message says what and why."""


def find_binary(name: str) -> str | None:
    """`name` on $PATH, else in the usual places of Debian's package and the snap."""
    found = shutil.which(name)
    if found:
        return found
    for directory in LXD_LOCATIONS:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_lxd() -> tuple[str, str]:
    """The `lxd` and `lxc` binaries, or a `HarnessError` saying how to install them."""
    lxd, lxc = find_binary("lxd"), find_binary("lxc")
    if lxd is None or lxc is None:
        missing = " and ".join(name for name, path in (("lxd", lxd), ("lxc", lxc)) if not path)
        looked = ", ".join(str(d) for d in LXD_LOCATIONS)
        raise HarnessError(f"{missing} not found on PATH nor in {looked}. {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise HarnessError("the integration tests start a private LXD daemon and must run "
                           "as root")
    return lxd, lxc


def _unmount_below(directory: Path) -> None:
    """Lazily unmount whatever LXD left mounted under `directory` (devlxd, shmounts, ...),
    deepest first, so that the directory can be removed."""
    prefix = str(directory.resolve()).rstrip("/") + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    targets = []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            mount_point = fields[4].encode().decode("unicode_escape")
            if mount_point.startswith(prefix) or mount_point + "/" == prefix:
                targets.append(mount_point)
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


class PrivateLXD:
    """One LXD daemon with its own LXD_DIR, started and stopped by the tests."""

    # What `start` gives `lxd init --preseed` (a cluster member gives its own).
    preseed: str = PRESEED

    def __init__(self, directory: Path) -> None:
        self.lxd_binary, self.lxc_binary = find_lxd()
        self.directory = Path(directory)
        self.log_path = self.directory.parent / f"{self.directory.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None
        # Imported images: alias -> full fingerprint.
        self.images: dict[str, str] = {}

    @classmethod
    def create(cls) -> PrivateLXD:
        """A daemon in a fresh temporary directory (short path: LXD binds unix sockets in
        it, and a socket path may not exceed 107 bytes)."""
        find_lxd()  # fail before making anything
        parent = Path(tempfile.mkdtemp(prefix="lxd-it-"))
        # Container roots run as mapped uids: they need to traverse the path to LXD_DIR.
        parent.chmod(0o711)
        return cls(parent / "lxd")

    @property
    def socket_path(self) -> Path:
        return self.directory / "unix.socket"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "LXD_DIR": str(self.directory)}

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon, wait until it answers, and initialise it (pool + root disk)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o711)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._process = subprocess.Popen(
            [self.lxd_binary, "--group", "root"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a ctrl+c of pytest must not kill LXD mid-teardown
        )
        try:
            waited = subprocess.run(
                [self.lxd_binary, "waitready", "--timeout", str(START_TIMEOUT)],
                env=self.env, capture_output=True, text=True, timeout=START_TIMEOUT + 10,
            )
            if waited.returncode != 0 or self._process.poll() is not None:
                raise HarnessError(
                    f"the private LXD did not become ready: {waited.stderr.strip()}\n"
                    f"{self.log_tail()}")
            self.run([self.lxd_binary, "init", "--preseed"], stdin=self.preseed)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Shut the daemon down (kill it if it will not go), then remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [self.lxd_binary, "shutdown", "--timeout", str(SHUTDOWN_TIMEOUT)],
                    env=self.env, capture_output=True, timeout=SHUTDOWN_TIMEOUT + 10,
                )
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _unmount_below(self.directory)
        shutil.rmtree(self.directory.parent, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no LXD log)"
        return "LXD log (last lines):\n" + "\n".join(text.splitlines()[-lines:])

    # --- commands --------------------------------------------------------------------

    def run(self, argv: list[str], *, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command with this daemon's LXD_DIR; raise with its output if it fails."""
        result = subprocess.run(argv, env=self.env, input=stdin, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
        if check and result.returncode != 0:
            raise HarnessError(f"{' '.join(argv)} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def lxc(self, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """`lxc ARGS...` against this daemon."""
        return self.run([self.lxc_binary, *args], stdin=stdin, check=check)

    def import_busybox(self, alias: str = BUSYBOX_ALIAS) -> str:
        """Build the busybox image and import it under `alias`; return its fingerprint."""
        self.busybox_tarball.parent.mkdir(parents=True, exist_ok=True)
        if not self.busybox_tarball.exists():
            self.run([str(BUILD_IMAGE), str(self.busybox_tarball)])
        self.lxc("image", "import", str(self.busybox_tarball), "--alias", alias)
        self.images[alias] = self.image_fingerprint(alias)
        return self.images[alias]

    @property
    def busybox_tarball(self) -> Path:
        return self.directory.parent / "busybox.tar.gz"

    def import_busybox_copy(self, alias: str) -> str:
        """Another busybox image with its own fingerprint (its metadata names `alias`),
        imported under `alias`, so that a test may delete it; return its fingerprint."""
        if not self.busybox_tarball.exists():
            self.run([str(BUILD_IMAGE), str(self.busybox_tarball)])
        with tempfile.TemporaryDirectory(prefix="busybox-copy-") as work:
            copy = Path(work) / f"{alias}.tar.gz"
            with tarfile.open(self.busybox_tarball) as source, \
                    tarfile.open(copy, "w:gz") as target:
                for member in source.getmembers():
                    data = source.extractfile(member) if member.isfile() else None
                    if member.name == "metadata.yaml" and data is not None:
                        text = data.read().decode() + f"  copy_of_busybox: {alias}\n"
                        member.size = len(text.encode())
                        data = io.BytesIO(text.encode())
                    target.addfile(member, data)
            self.lxc("image", "import", str(copy), "--alias", alias)
        self.images[alias] = self.image_fingerprint(alias)
        return self.images[alias]

    def delete_image(self, alias: str) -> None:
        self.lxc("image", "delete", alias)
        self.images.pop(alias, None)

    def image_fingerprint(self, alias: str) -> str:
        """The full fingerprint of the image behind `alias` (in the default project)."""
        answer = json.loads(self.lxc("query", f"/1.0/images/aliases/{alias}").stdout)
        return answer["target"]

    def instances(self, project: str) -> dict[str, dict]:
        """LXD's own instance objects of the project, by name (`GET /1.0/instances
        ?recursion=1`): status, config, profiles, devices, created_at, ..."""
        answer = json.loads(self.lxc("query", f"/1.0/instances?recursion=1&project={project}"
                                     ).stdout)
        return {instance["name"]: instance for instance in answer}

    def api(self) -> httpx.Client:
        """A client of this LXD's REST API on its unix socket (close it when done), for
        tests that sample LXD faster than `lxc` starts."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket_path),
                                                          verify=_PLAIN_HTTP),
                            base_url="http://lxd", trust_env=False, timeout=30)

    def states(self, project: str) -> dict[str, str]:
        """`lxc list` of the project: instance name -> state (RUNNING, STOPPED, ...)."""
        listed = self.lxc("list", "--project", project, "--format", "csv", "-c", "ns")
        return dict(line.split(",", 1) for line in listed.stdout.splitlines() if line)

    def wait_init_listens(self, project: str, instance: str, timeout: float = 30) -> None:
        """Wait until the busybox init of a running container catches SIGPWR (LXD's clean
        stop signal). A signal that reaches a container's PID 1 before its `trap` ran is
        ignored (PID 1 has no default actions), so a clean stop sent right after a launch
        can wait out its whole timeout on a loaded machine. Read from its SigCgt mask."""
        deadline = time.monotonic() + timeout
        bit = 1 << (signal.SIGPWR - 1)
        while True:
            status = self.lxc("exec", instance, "--project", project, "--",
                              "/bin/busybox", "cat", "/proc/1/status", check=False)
            caught = next((line.split()[1] for line in status.stdout.splitlines()
                           if line.startswith("SigCgt:")), "0")
            if int(caught, 16) & bit:
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"the init of {instance} did not trap SIGPWR within "
                                   f"{timeout}s: {status.stderr.strip()}")
            time.sleep(0.05)  # the container's shell is starting: nothing to block on

    def create_project(self, name: str) -> None:
        """A project that sees the default project's images (features.images=false) and
        has its own profiles, the default one with a root disk on the `default` pool."""
        self.lxc("project", "create", name,
                 "-c", "features.images=false", "-c", "features.profiles=true")
        self.lxc("profile", "device", "add", "default", "root", "disk",
                 "path=/", "pool=default", "--project", name)

    def create_profile(self, project: str, name: str, document: str) -> None:
        """A profile from YAML (LXD 5.0's `lxc profile create` ignores stdin: create, edit)."""
        self.lxc("profile", "create", name, "--project", project)
        self.lxc("profile", "edit", name, "--project", project, stdin=document)

    def delete_instance(self, project: str, instance: str, timeout: float = 60) -> None:
        """`lxc delete --force`, waiting out an operation of the service still running on
        the instance (LXD refuses while it runs); an instance already gone is fine."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.lxc("delete", "--force", instance, "--project", project, check=False)
            if result.returncode == 0 or instance not in self.states(project):
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"lxc delete --force {instance} failed: "
                                   f"{result.stderr.strip()}")
            time.sleep(0.1)  # another client's operation on it: nothing to block on

    def delete_project(self, name: str) -> None:
        """Delete the project with every instance and non-default profile in it."""
        listed = self.lxc("list", "--project", name, "--format", "csv", "-c", "n")
        instances = listed.stdout.split()
        if instances:
            with ThreadPoolExecutor(max_workers=min(len(instances), 8)) as pool:
                list(pool.map(lambda instance: self.delete_instance(name, instance),
                              instances))
        profiles = self.lxc("profile", "list", "--project", name, "--format", "csv")
        for line in profiles.stdout.splitlines():
            profile = line.split(",")[0]
            if profile and profile != "default":
                self.lxc("profile", "delete", profile, "--project", name)
        self.lxc("project", "delete", name)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM a service process and wait; kill it if it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
