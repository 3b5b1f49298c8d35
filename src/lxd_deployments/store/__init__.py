"""The service's store: SQL tables, migrations and the queries the core runs on them."""

from .database import Database, open_database

__all__ = ["Database", "open_database"]
