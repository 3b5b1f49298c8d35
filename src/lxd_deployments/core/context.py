"""The handles every core operation needs, built once by the daemon (or a test)."""

from __future__ import annotations

from dataclasses import dataclass

from ..lxd import LXDAdapter
from ..store import Database

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Core:
    """The store and the LXD adapter; core functions take it as their first argument."""

    db: Database
    lxd: LXDAdapter
