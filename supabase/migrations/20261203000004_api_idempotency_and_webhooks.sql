-- The HTTP API's own tables: responses stored under the caller's Idempotency-Key (a retried POST
-- replays the first answer instead of acting twice), webhook subscriptions and every delivery attempt.
-- None of these is part of the audit record; the API and the webhook activity own them.

create table if not exists public.api_idempotency (
    actor            text not null,
    idempotency_key  text not null,
    method           text not null,
    path             text not null,
    -- sha256 of method, path and body: the same key with another request is refused, not replayed.
    request_hash     text not null,
    -- Null while the first request is in flight: a concurrent repeat is told to wait.
    status_code      integer,
    response         jsonb,
    created_at       timestamptz not null default now(),
    completed_at     timestamptz,
    primary key (actor, idempotency_key)
);
create index if not exists api_idempotency_created on public.api_idempotency (created_at);

create table if not exists public.webhook_subscriptions (
    id            bigserial primary key,
    url           text not null check (url ~ '^https?://'),
    -- The HMAC-SHA256 key; never returned after creation and never readable by API users.
    secret        text not null check (length(secret) >= 16),
    event_filter  jsonb not null default '{}'::jsonb,
    description   text not null default '',
    active        boolean not null default true,
    created_by    text not null,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
create index if not exists webhook_subscriptions_active on public.webhook_subscriptions (active);

create table if not exists public.webhook_deliveries (
    id               bigserial primary key,
    subscription_id  bigint not null references public.webhook_subscriptions (id) on delete cascade,
    transition_id    bigint not null,
    resource_id      text not null,
    attempt          integer not null,
    status           text not null check (status in ('delivered', 'failed', 'rejected')),
    response_status  integer,
    error            text not null default '',
    duration_ms      integer,
    created_at       timestamptz not null default now()
);
-- A subscription receives each transition once: a retried activity skips what was delivered.
create unique index if not exists webhook_deliveries_once
    on public.webhook_deliveries (subscription_id, transition_id) where status = 'delivered';
create index if not exists webhook_deliveries_subscription
    on public.webhook_deliveries (subscription_id, id desc);
create index if not exists webhook_deliveries_transition on public.webhook_deliveries (transition_id);

-- Row-level security as for every rsm table (20261203000003), but API users read none of these:
-- subscriptions hold secrets, stored responses hold other callers' answers.
do $$
declare
    t text;
begin
    foreach t in array array['api_idempotency', 'webhook_subscriptions', 'webhook_deliveries']
    loop
        execute format('alter table public.%I enable row level security', t);
        execute format('revoke all on table public.%I from public, anon, authenticated, service_role', t);
        execute format('grant select, insert, update, delete on table public.%I to service_role', t);
        execute format('drop policy if exists rsm_service_role_write on public.%I', t);
        execute format(
            'create policy rsm_service_role_write on public.%I for all to service_role'
            ' using (true) with check (true)', t);
    end loop;
end
$$;

revoke all on sequence public.webhook_subscriptions_id_seq, public.webhook_deliveries_id_seq
    from public, anon, authenticated;
grant usage, select on sequence public.webhook_subscriptions_id_seq, public.webhook_deliveries_id_seq
    to service_role;

notify pgrst, 'reload schema';
