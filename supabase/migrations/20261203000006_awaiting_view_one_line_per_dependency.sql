-- The awaiting-action inbox names each dependency once: a `dependency` requirement (what a factory
-- reports through the seed API) stands for the link of the same name, and the links a name that is
-- not registered yet gets under every type (ids are unique across types) collapse into that one
-- line. Archived resources wait on nothing.

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
      and (t.resource_id is null or t.resource_type = d.depends_on_type)
      and not exists (
          select 1 from public.deployment_requirements q
          where q.resource_id = r.resource_id
            and q.requirement_type = 'dependency'
            and q.name = d.depends_on_id
      )
) w on true
where r.current_state <> 'archived'
  and (r.current_state in ('failed', 'failed_validation', 'awaiting_dependencies')
       or w.item is not null)
group by r.resource_id;

notify pgrst, 'reload schema';
