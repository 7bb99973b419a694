-- rsm lifecycle schema: current state, audited history, machine arrows and the one function that
-- moves a resource. Written in the Supabase CLI's migration convention so `supabase db push` applies it.

create table if not exists public.lifecycle_states (
    name text primary key
);

insert into public.lifecycle_states (name) values
    ('created'), ('registered'), ('validating'), ('validated'), ('failed_validation'),
    ('building'), ('built'), ('deploying'), ('deployed'), ('health_checking'), ('available'),
    ('active'), ('inactive'), ('failed'), ('archived'), ('awaiting_dependencies'), ('scaling')
on conflict do nothing;

create table if not exists public.state_machine_arrows (
    resource_type   text not null,
    machine_version integer not null,
    from_state      text not null references public.lifecycle_states (name),
    to_state        text not null references public.lifecycle_states (name),
    primary key (resource_type, machine_version, from_state, to_state)
);

create table if not exists public.resource_states (
    resource_id     text primary key,
    resource_type   text not null check (resource_type in ('n8n_workflow', 'mcp_server', 'team')),
    name            text not null,
    owner_team      text not null default '',
    current_state   text not null references public.lifecycle_states (name),
    machine_version integer not null,
    version         text,
    spec            jsonb not null default '{}'::jsonb,
    workflow_id     text,
    registered_by   text not null default '',
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create index if not exists resource_states_type_state on public.resource_states (resource_type, current_state);
create index if not exists resource_states_owner on public.resource_states (owner_team);

create table if not exists public.state_transitions (
    id               bigserial primary key,
    resource_id      text not null references public.resource_states (resource_id) on delete cascade,
    from_state       text references public.lifecycle_states (name),
    to_state         text not null references public.lifecycle_states (name),
    transitioned_by  text not null,
    reason           text not null default '',
    metadata         jsonb not null default '{}'::jsonb,
    idempotency_key  text not null unique,
    workflow_id      text,
    run_id           text,
    created_at       timestamptz not null default now()
);
create index if not exists state_transitions_resource on public.state_transitions (resource_id, id);

create table if not exists public.mcp_registry (
    resource_id      text primary key references public.resource_states (resource_id) on delete cascade,
    image            text,
    runtime          text,
    runtime_ref      text,
    endpoint         text,
    server_name      text,
    protocol_version text,
    tools            jsonb not null default '[]'::jsonb,
    healthy_at       timestamptz,
    updated_at       timestamptz not null default now()
);

create table if not exists public.deployment_requirements (
    id               bigserial primary key,
    resource_id      text not null references public.resource_states (resource_id) on delete cascade,
    requirement_type text not null check (requirement_type in ('credential', 'approval', 'dependency', 'other')),
    name             text not null,
    status           text not null default 'pending' check (status in ('pending', 'satisfied', 'failed', 'waived')),
    details          jsonb not null default '{}'::jsonb,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    unique (resource_id, requirement_type, name)
);

-- Counts kept current inside record_transition: a GROUP BY over a million rows costs ~50 ms even with
-- an index-only scan (DESIGN §9), this table costs one row update per transition.
create table if not exists public.resource_state_counts (
    resource_type text not null,
    state         text not null,
    count         bigint not null default 0,
    primary key (resource_type, state)
);

create or replace function public._rsm_bump_count(p_type text, p_state text, p_delta integer)
returns void language sql as $$
    insert into public.resource_state_counts (resource_type, state, count)
    values (p_type, p_state, p_delta)
    on conflict (resource_type, state) do update set count = resource_state_counts.count + excluded.count;
$$;

create or replace function public._rsm_check_state(p_state text)
returns void language plpgsql as $$
begin
    if not exists (select 1 from public.lifecycle_states where name = p_state) then
        raise exception using
            errcode = 'RSM04',
            message = format('unknown lifecycle state %L', p_state),
            hint = 'the worker is newer than the database schema: apply the migration that adds this state';
    end if;
end;
$$;

-- Registers a resource in `created`, with its first history row. Registering again is a no-op that
-- returns the existing row, so a retried activity or a second `rsm register` is harmless.
create or replace function public.register_resource(
    resource_id text,
    resource_type text,
    name text,
    machine_version integer,
    owner_team text default '',
    version text default null,
    spec jsonb default '{}'::jsonb,
    workflow_id text default null,
    actor text default 'system',
    idempotency_key text default null
) returns setof public.resource_states
language plpgsql as $$
#variable_conflict use_variable
declare
    key text := coalesce(idempotency_key, 'register/' || resource_id);
begin
    if not exists (
        select 1 from public.state_machine_arrows a
        where a.resource_type = register_resource.resource_type
          and a.machine_version = register_resource.machine_version
    ) then
        raise exception using
            errcode = 'RSM05',
            message = format('no state machine %s v%s in the database', resource_type, machine_version),
            hint = 'apply the migrations (rsm migrate) that write this machine''s arrows';
    end if;
    insert into public.resource_states as r
        (resource_id, resource_type, name, owner_team, current_state, machine_version, version, spec,
         workflow_id, registered_by)
    values
        (resource_id, resource_type, name, owner_team, 'created', machine_version, version, spec,
         workflow_id, actor)
    on conflict on constraint resource_states_pkey do nothing;
    if found then
        insert into public.state_transitions
            (resource_id, from_state, to_state, transitioned_by, reason, metadata, idempotency_key, workflow_id)
        values
            (resource_id, null, 'created', actor, 'resource registered',
             jsonb_build_object('version', version), key, workflow_id)
        on conflict on constraint state_transitions_idempotency_key_key do nothing;
        perform public._rsm_bump_count(resource_type, 'created', 1);
    end if;
    return query select * from public.resource_states s where s.resource_id = register_resource.resource_id;
end;
$$;

-- The one way a resource changes state: lock the row, check the arrow against the machine the
-- resource was created under, insert the history row under its idempotency key (a repeat returns the
-- first result and writes nothing), update the current state and the counts. One transaction.
create or replace function public.record_transition(
    resource_id text,
    to_state text,
    actor text,
    idempotency_key text,
    reason text default '',
    metadata jsonb default '{}'::jsonb,
    from_state text default null,
    workflow_id text default null,
    run_id text default null
) returns table (
    transition_id bigint,
    resource_type text,
    previous_state text,
    new_state text,
    recorded_at timestamptz,
    replayed boolean
)
language plpgsql as $$
#variable_conflict use_variable
declare
    res public.resource_states%rowtype;
    prior public.state_transitions%rowtype;
    new_id bigint;
    new_at timestamptz;
begin
    perform public._rsm_check_state(to_state);
    if from_state is not null then
        perform public._rsm_check_state(from_state);
    end if;

    select * into res from public.resource_states s
    where s.resource_id = record_transition.resource_id
    for update;
    if not found then
        raise exception using errcode = 'RSM02', message = format('unknown resource %L', resource_id);
    end if;

    -- Checked after the lock: a concurrent call with the same key has committed by now.
    select * into prior from public.state_transitions t
    where t.idempotency_key = record_transition.idempotency_key;
    if found then
        return query select prior.id, res.resource_type, prior.from_state, prior.to_state,
                            prior.created_at, true;
        return;
    end if;

    if from_state is not null and res.current_state <> from_state then
        raise exception using
            errcode = 'RSM03',
            message = format('resource %s is in %s, not %s', resource_id, res.current_state, from_state);
    end if;

    if not exists (
        select 1 from public.state_machine_arrows a
        where a.resource_type = res.resource_type
          and a.machine_version = res.machine_version
          and a.from_state = res.current_state
          and a.to_state = record_transition.to_state
    ) then
        raise exception using
            errcode = 'RSM01',
            message = format('illegal transition %s -> %s for %s %s (machine v%s)',
                             res.current_state, to_state, res.resource_type, resource_id,
                             res.machine_version);
    end if;

    insert into public.state_transitions
        (resource_id, from_state, to_state, transitioned_by, reason, metadata, idempotency_key,
         workflow_id, run_id)
    values
        (resource_id, res.current_state, to_state, actor, coalesce(reason, ''),
         coalesce(metadata, '{}'::jsonb), idempotency_key, workflow_id, run_id)
    returning id, created_at into new_id, new_at;

    update public.resource_states s
    set current_state = to_state, updated_at = new_at
    where s.resource_id = record_transition.resource_id;

    perform public._rsm_bump_count(res.resource_type, res.current_state, -1);
    perform public._rsm_bump_count(res.resource_type, to_state, 1);

    return query select new_id, res.resource_type, res.current_state, to_state, new_at, false;
end;
$$;

create or replace view public.resource_state_overview as
select resource_type, state, count
from public.resource_state_counts
where count > 0;

create or replace view public.resources_awaiting_action as
select
    r.resource_id,
    r.resource_type,
    r.name,
    r.owner_team,
    r.current_state,
    coalesce(array_agg(q.requirement_type || ':' || q.name order by q.name)
             filter (where q.id is not null), '{}') as waiting_on,
    r.updated_at
from public.resource_states r
left join public.deployment_requirements q
    on q.resource_id = r.resource_id and q.status in ('pending', 'failed')
where r.current_state in ('failed', 'failed_validation', 'awaiting_dependencies')
   or q.id is not null
group by r.resource_id;

create or replace view public.mcp_deployment_status as
select
    r.resource_id,
    r.name,
    r.owner_team,
    r.current_state,
    r.version,
    m.image,
    m.runtime,
    m.runtime_ref,
    m.endpoint,
    m.server_name,
    m.protocol_version,
    m.tools,
    m.healthy_at,
    r.updated_at
from public.resource_states r
left join public.mcp_registry m on m.resource_id = r.resource_id
where r.resource_type = 'mcp_server';

create or replace view public.workflow_deployment_pipeline as
select
    r.resource_id,
    r.name,
    r.owner_team,
    r.current_state,
    r.version,
    last.to_state as last_transition_to,
    last.reason as last_reason,
    last.created_at as last_transition_at,
    (select count(*) from public.deployment_requirements q
      where q.resource_id = r.resource_id and q.status = 'pending') as pending_requirements
from public.resource_states r
left join lateral (
    select t.to_state, t.reason, t.created_at
    from public.state_transitions t
    where t.resource_id = r.resource_id
    order by t.id desc
    limit 1
) last on true
where r.resource_type = 'n8n_workflow';

notify pgrst, 'reload schema';
