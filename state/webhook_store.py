"""Persistence of webhook subscriptions and delivery attempts (tables from migration
20261203000004). The API manages subscriptions; the delivery activity reads the targets of an event
and records every attempt.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from state.queries import fetch
from state.webhook_models import (
    DeliveryAttempt,
    SubscriptionTarget,
    TransitionEvent,
    WebhookDelivery,
    WebhookFilter,
    WebhookSubscription,
)

_PUBLIC_COLUMNS = "id, url, event_filter, description, active, created_by, created_at"


class WebhookStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def create(
        self, *, url: str, secret: str, event_filter: WebhookFilter, description: str, actor: str
    ) -> WebhookSubscription:
        rows = await fetch(
            self._pool,
            f"""
            insert into public.webhook_subscriptions (url, secret, event_filter, description, created_by)
            values (%(url)s, %(secret)s, %(filter)s, %(description)s, %(actor)s)
            returning {_PUBLIC_COLUMNS}
            """,
            {
                "url": url,
                "secret": secret,
                "filter": Jsonb(event_filter.model_dump(mode="json")),
                "description": description,
                "actor": actor,
            },
        )
        return WebhookSubscription.model_validate(rows[0])

    async def any_active(self) -> bool:
        rows = await fetch(
            self._pool,
            "select exists (select 1 from public.webhook_subscriptions where active) as any",
        )
        return bool(rows[0]["any"])

    async def list_all(self, *, include_inactive: bool = False) -> list[WebhookSubscription]:
        rows = await fetch(
            self._pool,
            f"select {_PUBLIC_COLUMNS} from public.webhook_subscriptions"
            " where active or %(all)s order by id",
            {"all": include_inactive},
        )
        return [WebhookSubscription.model_validate(r) for r in rows]

    async def get(self, subscription_id: int) -> WebhookSubscription | None:
        rows = await fetch(
            self._pool,
            f"select {_PUBLIC_COLUMNS} from public.webhook_subscriptions where id = %(id)s",
            {"id": subscription_id},
        )
        return WebhookSubscription.model_validate(rows[0]) if rows else None

    async def deactivate(self, subscription_id: int) -> WebhookSubscription | None:
        """Stop deliveries; the row and its delivery history stay for the record."""
        rows = await fetch(
            self._pool,
            f"""
            update public.webhook_subscriptions set active = false, updated_at = now()
            where id = %(id)s returning {_PUBLIC_COLUMNS}
            """,
            {"id": subscription_id},
        )
        return WebhookSubscription.model_validate(rows[0]) if rows else None

    async def targets_for(
        self, event: TransitionEvent
    ) -> tuple[list[SubscriptionTarget], list[int]]:
        """Active subscriptions that match the event and existed when it was recorded, split into
        those still to deliver and those that already have it (an earlier attempt delivered)."""
        rows = await fetch(
            self._pool,
            """
            select s.id, s.url, s.secret, s.event_filter,
                   exists (select 1 from public.webhook_deliveries d
                           where d.subscription_id = s.id and d.transition_id = %(tid)s
                             and d.status = 'delivered') as delivered
            from public.webhook_subscriptions s
            where s.active and s.created_at <= %(at)s
            order by s.id
            """,
            {"tid": event.transition_id, "at": event.recorded_at},
        )
        todo: list[SubscriptionTarget] = []
        done: list[int] = []
        for row in rows:
            target = SubscriptionTarget.model_validate(row)
            if not target.event_filter.matches(event):
                continue
            (done.append(target.id) if row["delivered"] else todo.append(target))
        return todo, done

    async def record(self, attempt: DeliveryAttempt) -> None:
        await fetch(
            self._pool,
            """
            insert into public.webhook_deliveries
                (subscription_id, transition_id, resource_id, attempt, status, response_status,
                 error, duration_ms)
            values (%(subscription_id)s, %(transition_id)s, %(resource_id)s, %(attempt)s,
                    %(status)s, %(response_status)s, %(error)s, %(duration_ms)s)
            on conflict do nothing
            """,
            attempt.model_dump(),
        )

    async def deliveries(
        self,
        *,
        subscription_id: int | None = None,
        transition_id: int | None = None,
        limit: int = 100,
    ) -> list[WebhookDelivery]:
        params: dict[str, Any] = {"sid": subscription_id, "tid": transition_id, "limit": limit}
        rows = await fetch(
            self._pool,
            """
            select * from public.webhook_deliveries
            where (%(sid)s::bigint is null or subscription_id = %(sid)s)
              and (%(tid)s::bigint is null or transition_id = %(tid)s)
            order by id desc limit %(limit)s
            """,
            params,
        )
        return [WebhookDelivery.model_validate(r) for r in rows]
