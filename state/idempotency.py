"""Stored API responses keyed by (actor, Idempotency-Key), table `api_idempotency`.

The first request with a key claims it (a row without a response); when it finishes its response is
stored and every repeat of the same request gets that response again. A repeat while the first is
still running, or the same key with a different request, is refused by the caller (the API).
Keys expire after a day, as Stripe's do.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

from state.queries import fetch

KEY_TTL = timedelta(hours=24)


class StoredResponse(BaseModel):
    request_hash: str
    status_code: int | None
    response: Any = None


class Claim(BaseModel):
    outcome: Literal["claimed", "replay", "in_progress", "mismatch"]
    stored: StoredResponse | None = None


class IdempotencyStore:
    def __init__(self, pool: AsyncConnectionPool, ttl: timedelta = KEY_TTL) -> None:
        self._pool = pool
        self._ttl = ttl

    async def claim(self, actor: str, key: str, method: str, path: str, request_hash: str) -> Claim:
        params = {
            "actor": actor,
            "key": key,
            "method": method,
            "path": path,
            "hash": request_hash,
            "ttl": self._ttl,
        }
        # An expired row is taken over as if it were absent.
        rows = await fetch(
            self._pool,
            """
            insert into public.api_idempotency as i
                (actor, idempotency_key, method, path, request_hash)
            values (%(actor)s, %(key)s, %(method)s, %(path)s, %(hash)s)
            on conflict (actor, idempotency_key) do update
                set method = excluded.method, path = excluded.path,
                    request_hash = excluded.request_hash, status_code = null, response = null,
                    created_at = now(), completed_at = null
                where i.created_at < now() - %(ttl)s
            returning 1 as claimed
            """,
            params,
        )
        if rows:
            return Claim(outcome="claimed")
        existing = await fetch(
            self._pool,
            "select request_hash, status_code, response from public.api_idempotency"
            " where actor = %(actor)s and idempotency_key = %(key)s",
            params,
        )
        if not existing:  # expired and purged between the two statements: try once more
            return await self.claim(actor, key, method, path, request_hash)
        stored = StoredResponse.model_validate(existing[0])
        if stored.request_hash != request_hash:
            return Claim(outcome="mismatch", stored=stored)
        if stored.status_code is None:
            return Claim(outcome="in_progress", stored=stored)
        return Claim(outcome="replay", stored=stored)

    async def complete(self, actor: str, key: str, status_code: int, response: Any) -> None:
        await fetch(
            self._pool,
            """
            update public.api_idempotency
            set status_code = %(status)s, response = %(response)s, completed_at = now()
            where actor = %(actor)s and idempotency_key = %(key)s
            """,
            {"actor": actor, "key": key, "status": status_code, "response": Jsonb(response)},
        )

    async def release(self, actor: str, key: str) -> None:
        """Forget a claim whose request failed before answering (a 5xx), so a retry may run."""
        await fetch(
            self._pool,
            "delete from public.api_idempotency where actor = %(actor)s"
            " and idempotency_key = %(key)s and status_code is null",
            {"actor": actor, "key": key},
        )

    async def purge_expired(self) -> int:
        rows = await fetch(
            self._pool,
            "delete from public.api_idempotency where created_at < now() - %(ttl)s returning 1",
            {"ttl": self._ttl},
        )
        return len(rows)
