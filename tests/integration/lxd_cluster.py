"""A real LXD cluster on one machine: two or three private LXD daemons (`PrivateLXD`, each
with its own `LXD_DIR`), bound to loopback addresses of their own, joined with
`lxd init --preseed`.

    cluster = LXDCluster.create(3)       # members m1, m2, m3
    cluster.start()                      # bootstrap m1, join m2 and m3 with tokens
    cluster.leader.import_busybox()      # images are cluster-wide (copied on demand)
    cluster.leader.lxc("launch", "busybox", "c1", "--target", "m2")
    cluster.stop()                       # shuts every member down, removes their dirs

The first member bootstraps the cluster (`cluster.enabled: true`, `core.https_address`
on its address); each other one joins with a token from `lxc cluster add` on the first
and the first's cluster certificate. Every member listens on port 8443 of its own
address in 127.0.0.0/8 (`127.0.X.1`, `127.0.X.2`, ... with X picked so that nothing
listens there yet), so several clusters (other test runs) can coexist on one host.
A `dir` storage pool `default` exists on every member; there is no network.
"""

from __future__ import annotations

import contextlib
import random
import socket
from concurrent.futures import ThreadPoolExecutor

import yaml

from .lxd_harness import PRESEED, HarnessError, PrivateLXD

PORT = 8443


class ClusterMember(PrivateLXD):
    """One member: a private LXD with a name, an address and the preseed it starts with."""

    name: str = ""
    address: str = ""

    @classmethod
    def make(cls, name: str, address: str) -> ClusterMember:
        member = cls.create()
        assert isinstance(member, ClusterMember)
        member.name, member.address = name, address
        return member

    @property
    def url(self) -> str:
        return f"{self.address}:{PORT}"


def _bootstrap_preseed(member: ClusterMember) -> str:
    document = yaml.safe_load(PRESEED)
    document["config"] = {"core.https_address": member.url}
    document["cluster"] = {"server_name": member.name, "enabled": True}
    return yaml.safe_dump(document)


def _join_preseed(member: ClusterMember, leader: ClusterMember, token: str) -> str:
    return yaml.safe_dump({"cluster": {
        "enabled": True,
        "server_name": member.name,
        "server_address": member.url,
        "cluster_address": leader.url,
        "cluster_certificate": (leader.directory / "cluster.crt").read_text(),
        "cluster_token": token,
        # The `default` pool is created cluster-wide by the bootstrap; a dir pool takes
        # its default source on each member.
        "member_config": [{"entity": "storage-pool", "name": "default", "key": "source",
                           "value": ""}],
    }})


def _free(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address, PORT))
        except OSError:
            return False
    return True


def free_addresses(size: int, attempts: int = 50) -> list[str]:
    """`size` loopback addresses 127.0.X.1..size whose port 8443 nothing listens on."""
    for _ in range(attempts):
        subnet = random.randint(2, 254)
        addresses = [f"127.0.{subnet}.{i}" for i in range(1, size + 1)]
        if all(_free(address) for address in addresses):
            return addresses
    raise HarnessError(f"no free loopback addresses for a cluster of {size} (port {PORT})")


class LXDCluster:
    """Members m1..mN of one LXD cluster; `leader` (m1) is the one the tests talk to."""

    def __init__(self, members: list[ClusterMember]) -> None:
        self.members = members

    @classmethod
    def create(cls, size: int = 3) -> LXDCluster:
        if size < 2:
            raise HarnessError("a cluster needs at least two members")
        members: list[ClusterMember] = []
        try:
            for index, address in enumerate(free_addresses(size), start=1):
                members.append(ClusterMember.make(f"m{index}", address))
        except BaseException:
            for member in members:
                member.stop()
            raise
        return cls(members)

    @property
    def leader(self) -> ClusterMember:
        return self.members[0]

    @property
    def names(self) -> list[str]:
        return [member.name for member in self.members]

    def start(self) -> None:
        """Bootstrap the first member, then join the others one by one (a token each)."""
        try:
            self.leader.preseed = _bootstrap_preseed(self.leader)
            self.leader.start()
            for member in self.members[1:]:
                token = self.leader.lxc("cluster", "add", member.name).stdout.strip()
                member.preseed = _join_preseed(member, self.leader, token.splitlines()[-1])
                member.start()
        except BaseException:
            self.stop()
            raise

    def locations(self, project: str) -> dict[str, str]:
        """Instance name -> the member it is on, as LXD says."""
        return {name: instance.get("location", "")
                for name, instance in self.leader.instances(project).items()}

    def stop(self) -> None:
        """Shut every member down at once and remove their directories (delete the
        projects first: a member's containers would outlive it)."""
        with ThreadPoolExecutor(max_workers=len(self.members)) as pool:
            for future in [pool.submit(member.stop) for member in self.members]:
                with contextlib.suppress(Exception):
                    future.result()
