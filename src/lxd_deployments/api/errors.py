"""One table from domain errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors
from .envelope import error_response

logger = logging.getLogger(__name__)

# Most specific first: BoundReached is a Conflict.
STATUS_OF: tuple[tuple[type[errors.DeploymentsError], int], ...] = (
    (errors.InvalidInput, 400),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.PreconditionFailed, 412),
    (errors.PayloadTooLarge, 413),
    (errors.TooManyRequests, 429),
    (errors.LXDUnavailable, 503),
)


def status_of(error: errors.DeploymentsError) -> int:
    for kind, status in STATUS_OF:
        if isinstance(error, kind):
            return status
    return 500


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def describe_validation_error(exc: RequestValidationError) -> str:
    """One sentence for the first problem, naming the field, as LXD's messages do."""
    problems = exc.errors()
    if not problems:
        return "Invalid request"
    first = problems[0]
    kind, where, message = first.get("type", ""), _field(first.get("loc", ())), first.get("msg", "")
    if kind == "json_invalid":
        return f"Invalid JSON body: {first.get('ctx', {}).get('error', message)}"
    if kind == "missing" and not where:
        return "A JSON body is required"
    if kind == "missing":
        return f'Missing field "{where}"'
    if kind == "extra_forbidden":
        return f'Unknown field "{where}"'
    if kind == "model_attributes_type" or (kind == "dict_type" and not where):
        return "The JSON body must be an object"
    message = message.removeprefix("Value error, ")
    return f'Invalid value for "{where}": {message}' if where else message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.DeploymentsError)
    async def _domain(_request: Request, exc: errors.DeploymentsError):
        return error_response(status_of(exc), exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        return error_response(400, describe_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException):
        message = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, exc.detail)
        return error_response(exc.status_code, str(message))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"Internal error: {type(exc).__name__}")
