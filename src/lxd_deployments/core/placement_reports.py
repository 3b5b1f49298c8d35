"""What was last told about each placement group's violations, so that a lasting one is
told once per new value (by the launch that made it, or the check that found it),
whichever process of the service told it: kept in the store, in the transaction that
compares it."""

from __future__ import annotations

from ..store import Database
from ..store import placement_reports as rows


class PlacementReports:
    def __init__(self, db: Database) -> None:
        self._db = db

    def changed(self, group_id: int, fingerprint: str) -> bool:
        """Remember `fingerprint` for the group; whether it differs from what was told
        (False for a group deleted meanwhile: there is no one to tell)."""
        with self._db.write() as conn:
            if rows.told(conn, group_id) == fingerprint:
                return False
            return rows.remember(conn, group_id, fingerprint)
