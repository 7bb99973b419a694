"""One error shape for every refusal (`{"error": code, "detail": reason}`), the mapping from domain
and Temporal failures to HTTP statuses, and the OpenAPI declarations of those responses.

401: no or unknown token. 403: the token's role may not do this. 404: no such resource. 409: the
resource's lifecycle refuses now (illegal arrow, self-approval, nothing to approve, not running).
422: the request itself is malformed. 503: a backing service (Postgres, Temporal, a worker) did not
answer; nothing was done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from control.client import CommandRefused
from state.errors import (
    IllegalTransitionError,
    StaleStateError,
    StoreError,
    StoreUnavailableError,
    UnknownResourceError,
)

T = TypeVar("T")


class ErrorBody(BaseModel):
    error: str
    detail: str
    errors: list[dict[str, Any]] | None = None


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return ErrorBody(error=self.error, detail=self.detail).model_dump(exclude_none=True)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, "unauthorized", detail, {"WWW-Authenticate": "Bearer"})


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("The body is not valid JSON."),
    401: _doc("No bearer token, or one nobody configured."),
    403: _doc("The token's role may not do this."),
    404: _doc("No such resource."),
    409: _doc(
        "Refused in the current state: illegal arrow, self-approval, nothing to approve, a source"
        " on the server that is not a valid resource, a reused Idempotency-Key."
    ),
    422: _doc("The request is malformed."),
    503: _doc("Postgres, Temporal or a worker did not answer; nothing was done."),
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: RESPONSES[code] for code in codes}


async def guarded(call: Awaitable[T], *, timeout: float, what: str) -> T:
    """Await a Temporal or store call, turning its failures into ApiErrors."""
    try:
        return await asyncio.wait_for(call, timeout)
    except CommandRefused as exc:
        raise ApiError(409, "refused", str(exc)) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise ApiError(409, "refused", getattr(cause, "message", None) or str(cause)) from None
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ApiError(
                409, "not_running", f"{what}: its lifecycle workflow is not running ({exc.message})"
            ) from None
        if exc.status is RPCStatusCode.INVALID_ARGUMENT:
            raise ApiError(409, "refused", f"{what}: {exc.message}") from None
        raise ApiError(503, "unavailable", f"{what}: Temporal: {exc.message}") from None
    except TimeoutError:
        raise ApiError(
            503, "unavailable", f"{what}: no worker answered within {timeout:.0f}s"
        ) from None
    except IllegalTransitionError as exc:
        raise ApiError(409, "illegal_transition", str(exc)) from None
    except StaleStateError as exc:
        raise ApiError(409, "stale_state", str(exc)) from None
    except UnknownResourceError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except StoreUnavailableError as exc:
        raise ApiError(503, "unavailable", str(exc)) from None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StoreUnavailableError)
    async def _store_down(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        return ApiError(503, "unavailable", str(exc)).response()

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        # Inputs are validated before they reach the database: anything else is our bug.
        return ApiError(500, "store_error", str(exc)).response()

    @app.exception_handler(ValidationError)
    async def _domain_invalid(_: Request, exc: ValidationError) -> JSONResponse:
        # Request bodies passed their schema but a domain model built from them refused a value:
        # still the caller's input, so a 422 naming it rather than a 500.
        summary = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        return ApiError(422, "invalid_request", summary or str(exc)).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        body = ErrorBody(
            error="invalid_request", detail=summary or "invalid request", errors=errors
        )
        return JSONResponse(body.model_dump(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorBody(error=_CODES.get(exc.status_code, "error"), detail=str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette lists only the first matching route's methods; a path may have several.
            headers["Allow"] = ", ".join(sorted(_methods_for(request)))
        return JSONResponse(
            body.model_dump(exclude_none=True), status_code=exc.status_code, headers=headers
        )


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
}


def _methods_for(request: Request) -> set[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return methods


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query(request: Request) -> None:
    """A misspelt filter (`?stat=failed`) must not silently widen a list or a bulk action."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    unknown = sorted(set(request.query_params) - _query_names(route.dependant))
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown query parameter(s): {', '.join(unknown)}")
