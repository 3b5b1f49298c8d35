"""The HTTP face of the service: LXD-style REST over ASGI (FastAPI)."""

from .app import create_app

__all__ = ["create_app"]
