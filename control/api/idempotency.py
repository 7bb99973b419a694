"""`Idempotency-Key` on POSTs: the first request with a key runs and its answer is stored; a repeat
with the same key and the same request gets the stored answer (header `Idempotent-Replayed: true`)
without acting again. Keys belong to the caller (actor), so two callers never collide.

Refusals the lifecycle gave (403/404/409/422) are answers too and are replayed; a 503 or a crash is
not an answer, so its key is released and the request may be retried.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from control.api.auth import Principal
from control.api.context import ApiContext
from control.api.errors import ApiError

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        pattern=r"^[!-~]{1,255}$",
        description="Repeat a POST safely: the same key and body return the first answer.",
    ),
]

Handler = Callable[[], Awaitable[tuple[int, BaseModel]]]


def _request_hash(request: Request, body: BaseModel | None) -> str:
    payload = body.model_dump(mode="json") if body is not None else None
    text = json.dumps(
        [request.method, request.url.path, str(request.url.query), payload], sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


async def idempotent(
    ctx: ApiContext,
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    handler: Handler,
) -> JSONResponse:
    if key is None:
        status, model = await handler()
        return JSONResponse(model.model_dump(mode="json"), status_code=status)
    store = ctx.idempotency
    claim = await store.claim(
        principal.actor, key, request.method, request.url.path, _request_hash(request, body)
    )
    if claim.outcome == "replay":
        assert claim.stored is not None and claim.stored.status_code is not None
        return JSONResponse(
            claim.stored.response,
            status_code=claim.stored.status_code,
            headers={"Idempotent-Replayed": "true"},
        )
    if claim.outcome == "mismatch":
        raise ApiError(
            409,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was used for a different request; use a new key",
        )
    if claim.outcome == "in_progress":
        raise ApiError(
            409,
            "idempotency_key_in_progress",
            f"a request with Idempotency-Key {key!r} is still running; retry shortly",
        )
    try:
        status, model = await handler()
        content: Any = model.model_dump(mode="json")
    except ApiError as exc:
        if exc.status >= 500:
            await store.release(principal.actor, key)
            raise
        status, content = exc.status, exc.body()
    except BaseException:
        await store.release(principal.actor, key)
        raise
    await store.complete(principal.actor, key, status, content)
    return JSONResponse(content, status_code=status)
