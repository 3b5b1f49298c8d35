"""The OpenAPI document as the service really answers: LXD's envelopes, not FastAPI's 422.

FastAPI documents validation failures as 422 with its own body; this service answers
every error with 400..413 in LXD's error envelope (see `errors.py`), so the document is
rewritten once, when first asked for, to say so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_ENVELOPE = {
    "type": "object",
    "description": "LXD's error envelope: error_code is the HTTP status.",
    "required": ["type", "error_code", "error"],
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "status": {"type": "string"},
        "status_code": {"type": "integer"},
        "operation": {"type": "string"},
        "error_code": {"type": "integer"},
        "error": {"type": "string"},
        "metadata": {"nullable": True},
    },
}

# The errors any route may answer, with what they mean here.
ERRORS = {
    "400": "Invalid input: malformed JSON, unknown field, broken validation rule",
    "401": "Not authenticated: no trusted client certificate nor valid bearer token (JWT); "
           "only GET /1.0 is public",
    "403": "Forbidden: the caller's role or deployment key does not allow this",
    "404": "Not found",
    "409": "Conflict: exists already, in use, or a scaling bound would be crossed",
    "412": "ETag mismatch (If-Match)",
    "413": "Request body too large",
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version,
                                   description=app.description, routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas["ErrorEnvelope"] = ERROR_ENVELOPE
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    responses.pop("422", None)
                    for code, description in ERRORS.items():
                        responses.setdefault(code, _error_response(description))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
