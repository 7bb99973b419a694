-- Gates: which resources a resource depends on (teams on MCP servers and workflows), so a resource
-- entering or leaving `active` can signal its dependents, and `archive` can refuse while active
-- dependents exist. Requirements already live in deployment_requirements.

create table if not exists public.resource_dependencies (
    resource_id        text not null references public.resource_states (resource_id) on delete cascade,
    depends_on_type    text not null,
    depends_on_id      text not null,
    created_at         timestamptz not null default now(),
    primary key (resource_id, depends_on_type, depends_on_id)
);
create index if not exists resource_dependencies_target
    on public.resource_dependencies (depends_on_type, depends_on_id);

-- A resource waiting on dependencies shows them, with their current state, in the inbox.
create or replace view public.resources_awaiting_action with (security_invoker = true) as
select
    r.resource_id,
    r.resource_type,
    r.name,
    r.owner_team,
    r.current_state,
    coalesce(array_agg(distinct w.item) filter (where w.item is not null), '{}') as waiting_on,
    r.updated_at
from public.resource_states r
left join lateral (
    select q.requirement_type || ':' || q.name as item
    from public.deployment_requirements q
    where q.resource_id = r.resource_id and q.status in ('pending', 'failed')
    union all
    select 'dependency:' || d.depends_on_type || '/' || d.depends_on_id
    from public.resource_dependencies d
    left join public.resource_states t on t.resource_id = d.depends_on_id
    where d.resource_id = r.resource_id
      and r.current_state = 'awaiting_dependencies'
      and coalesce(t.current_state, '') <> 'active'
) w on true
where r.current_state in ('failed', 'failed_validation', 'awaiting_dependencies')
   or w.item is not null
group by r.resource_id;

-- Same row-level security as every rsm table (20261203000003): service role writes, authenticated
-- users read, anon nothing.
alter table public.resource_dependencies enable row level security;
revoke all on table public.resource_dependencies from public, anon, authenticated, service_role;
grant select on table public.resource_dependencies to authenticated;
grant select, insert, update, delete on table public.resource_dependencies to service_role;
drop policy if exists rsm_authenticated_read on public.resource_dependencies;
create policy rsm_authenticated_read on public.resource_dependencies
    for select to authenticated using (true);
drop policy if exists rsm_service_role_write on public.resource_dependencies;
create policy rsm_service_role_write on public.resource_dependencies
    for all to service_role using (true) with check (true);

notify pgrst, 'reload schema';
