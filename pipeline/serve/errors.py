"""What a bad request is told: {"error": "..."} with the right status, never a traceback."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

JSON_KINDS = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}
NOT_JSON = "There was an error parsing the body"  # FastAPI's 400 for bytes json.loads refuses
SEND = '{"reviews": ["review", ...]}'


class ApiError(HTTPException):
    """An error answered as {"error": detail} with its status code."""


def error_response(exc: HTTPException) -> JSONResponse:
    """The JSON answer for an HTTP error."""
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def not_json(reason: object) -> ApiError:
    """A 400 for a body that does not parse, saying where."""
    return ApiError(400, f"the request body is not valid JSON ({reason}); send {SEND}")


def body_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's account of a bad body, said the way this service says it."""
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "json_invalid":  # FastAPI keeps the document and where it failed
        return not_json(json.JSONDecodeError(first["ctx"]["error"], exc.body, first["loc"][1]))
    if first["type"] == "missing" and tuple(first["loc"]) == ("body",):  # an empty body
        return not_json(json.JSONDecodeError("Expecting value", "", 0))
    if tuple(first["loc"]) == ("body",):  # the JSON is not an object at all
        if isinstance(first.get("input"), bytes):  # a Content-Type that is not JSON
            return ApiError(415, f"the body is not sent as JSON; send {SEND} as application/json")
        kind = JSON_KINDS.get(type(first.get("input")), "value")
        return ApiError(422, f'the body is a JSON {kind}; send an object {{"reviews": [...]}}')
    where = ".".join(str(part) for part in first["loc"][1:])
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return ApiError(
        422,
        f"{where}: {first['msg']}{more}; send a JSON object "
        '{"reviews": ["review", ...]} with a list of strings',
    )


def within(reviews: list[str], limit: int) -> list[str]:
    """The reviews, or a 413 when there are more than `limit`."""
    if len(reviews) > limit:
        raise ApiError(
            413,
            f"{len(reviews):,} reviews in one request; the limit is {limit:,}: "
            "split them over several requests",
        )
    return reviews


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is a 413, declared or found while reading."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    def _error(self, size: str) -> ApiError:
        return ApiError(
            413,
            f"the request body is {size} the limit of {self.limit:,} bytes "
            "(serve_max_body_bytes): send fewer or shorter reviews per request",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = error_response(self._error(f"{int(declared):,} bytes, over"))
            return await response(scope, receive, send)
        received = 0

        async def receive_limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise self._error("larger than")
            return message

        await self.app(scope, receive_limited, send)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error as {"error": "..."}: bad bodies, unknown paths, failures inside."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return error_response(exc)
        if exc.status_code == 400 and exc.detail == NOT_JSON:  # bad UTF-8, absurd nesting
            return error_response(not_json(exc.__cause__))
        if exc.status_code == 404:
            exc.detail = f"there is no {request.url.path}; the endpoints are listed at /docs"
        elif exc.status_code == 405:
            exc.detail = f"{request.method} is not allowed on {request.url.path}; see /docs"
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(body_error(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the service is still running"},
            status_code=500,
        )
