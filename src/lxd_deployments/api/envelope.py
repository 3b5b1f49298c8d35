"""LXD's response envelope: every answer, success or error, has the same JSON shape."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def sync_response(metadata: Any = None, *, status_code: int = 200,
                  etag: str | None = None, location: str | None = None) -> JSONResponse:
    headers = {}
    if etag:
        headers["ETag"] = f'"{etag}"'
    if location:
        headers["Location"] = location
    return JSONResponse(status_code=status_code, headers=headers, content={
        "type": "sync", "status": "Success", "status_code": 200, "operation": "",
        "error_code": 0, "error": "", "metadata": _plain(metadata)})


def created_response(location: str) -> JSONResponse:
    """LXD answers a synchronous create with 201 and the new object's URL."""
    return sync_response(status_code=201, location=location)


def error_response(http_status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=http_status, content={
        "type": "error", "status": "", "status_code": 0, "operation": "",
        "error_code": http_status, "error": message, "metadata": None})


def async_response(operation: dict[str, Any], url: str) -> JSONResponse:
    """LXD's answer to long work: 202, the operation object, its URL in `Location`."""
    return JSONResponse(status_code=202, headers={"Location": url}, content={
        "type": "async", "status": "Operation created", "status_code": 100,
        "operation": url, "error_code": 0, "error": "", "metadata": operation})
