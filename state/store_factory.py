"""Which store adapter a process uses, decided once from its settings.

Supabase (over PostgREST, with the service-role key) when both `SUPABASE_URL` and
`SUPABASE_SERVICE_ROLE_KEY` are set; otherwise Postgres directly at `RSM_DATABASE_URL`. Half a
Supabase configuration is refused by name rather than quietly falling back to Postgres: whoever set
one of the two expects their state to land in Supabase.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import SecretStr

from state.errors import StoreError
from state.postgres import PostgresStore, redact_dsn
from state.store import StateStore
from state.supabase_store import SupabaseStore


class StoreSettings(Protocol):
    """The part of `RsmSettings` the factory reads."""

    @property
    def database_url(self) -> str: ...

    @property
    def supabase_url(self) -> str | None: ...

    @property
    def supabase_service_role_key(self) -> SecretStr | None: ...


def uses_supabase(settings: StoreSettings) -> bool:
    """True when Supabase is fully configured; raises on half a configuration."""
    url = settings.supabase_url or None
    key = settings.supabase_service_role_key
    has_key = key is not None and bool(key.get_secret_value())
    if url and not has_key:
        raise StoreError(
            "SUPABASE_URL is set but SUPABASE_SERVICE_ROLE_KEY is not: the store writes through"
            " the service role (unset SUPABASE_URL to use RSM_DATABASE_URL directly)"
        )
    if has_key and not url:
        raise StoreError("SUPABASE_SERVICE_ROLE_KEY is set but SUPABASE_URL is not")
    return bool(url)


def store_location(settings: StoreSettings) -> str:
    """Where the store lives, for messages (never a password)."""
    if uses_supabase(settings):
        return f"Supabase at {settings.supabase_url}"
    return f"the database at {redact_dsn(settings.database_url)}"


async def store_from_settings(settings: StoreSettings) -> StateStore:
    if uses_supabase(settings):
        assert settings.supabase_url is not None and settings.supabase_service_role_key is not None
        return await SupabaseStore.connect(
            settings.supabase_url, settings.supabase_service_role_key.get_secret_value()
        )
    return await PostgresStore.connect(settings.database_url)
