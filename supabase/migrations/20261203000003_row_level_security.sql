-- Row-level security for Supabase: the service role writes, authenticated users read, the anonymous
-- role can do nothing. Two layers, because Supabase's default privileges grant every new table in
-- `public` to anon and authenticated: table privileges are revoked here (anon gets "permission
-- denied for table"), and RLS is on with no policy for anon (had a later grant slipped through, every
-- row would still be hidden and every write refused). The direct Postgres adapter connects as the
-- tables' owner (or a superuser) and is not affected.

-- Supabase's API roles, created the way Supabase's own local setup does when this runs on plain
-- Postgres (CI, the dev stack); on a Supabase project they exist and are left alone. Roles belong to
-- the cluster, so two databases migrating at once may race: a duplicate is fine. BYPASSRLS needs a
-- superuser; without one the service role still writes through the policies below.
do $$
declare
    spec record;
begin
    for spec in
        select * from (values
            ('anon', 'nologin noinherit'),
            ('authenticated', 'nologin noinherit'),
            ('service_role', 'nologin noinherit bypassrls')
        ) as r (name, options)
    loop
        if exists (select 1 from pg_roles where rolname = spec.name) then
            continue;
        end if;
        begin
            execute format('create role %I %s', spec.name, spec.options);
        exception
            when duplicate_object or unique_violation then
                null;
            when insufficient_privilege then
                execute format('create role %I %s', spec.name,
                               replace(spec.options, ' bypassrls', ''));
        end;
    end loop;
end
$$;

grant usage on schema public to anon, authenticated, service_role;

-- Tables: privileges, then RLS with one policy per role that may see rows.
do $$
declare
    t text;
begin
    foreach t in array array[
        'lifecycle_states', 'state_machine_arrows', 'resource_states', 'state_transitions',
        'mcp_registry', 'deployment_requirements', 'resource_state_counts', 'rsm_schema_migrations'
    ]
    loop
        -- rsm_schema_migrations exists only where `rsm migrate` applied this (not `supabase db push`).
        if to_regclass(format('public.%I', t)) is null then
            continue;
        end if;
        execute format('alter table public.%I enable row level security', t);
        execute format('revoke all on table public.%I from public, anon, authenticated, service_role', t);
        execute format('grant select on table public.%I to authenticated', t);
        execute format('drop policy if exists rsm_authenticated_read on public.%I', t);
        execute format(
            'create policy rsm_authenticated_read on public.%I for select to authenticated using (true)', t);
        execute format('drop policy if exists rsm_service_role_write on public.%I', t);
        execute format(
            'create policy rsm_service_role_write on public.%I for all to service_role'
            ' using (true) with check (true)', t);
        -- The audit history is append-only, even for the service role: record_transition only inserts.
        if t = 'state_transitions' then
            execute format('grant select, insert on table public.%I to service_role', t);
        else
            execute format('grant select, insert, update, delete on table public.%I to service_role', t);
        end if;
    end loop;
end
$$;

revoke all on sequence public.state_transitions_id_seq, public.deployment_requirements_id_seq
    from public, anon, authenticated;
grant usage, select on sequence public.state_transitions_id_seq, public.deployment_requirements_id_seq
    to service_role;

-- Views run with the caller's rights (security_invoker, Postgres 15+), so the tables' RLS applies to
-- them; a default view runs as its owner and would hand every row to whoever may select from it.
do $$
declare
    v text;
begin
    foreach v in array array[
        'resource_state_overview', 'resources_awaiting_action', 'mcp_deployment_status',
        'workflow_deployment_pipeline'
    ]
    loop
        execute format('alter view public.%I set (security_invoker = true)', v);
        execute format('revoke all on table public.%I from public, anon, authenticated, service_role', v);
        execute format('grant select on table public.%I to authenticated, service_role', v);
    end loop;
end
$$;

-- Functions are executable by PUBLIC by default (and Supabase grants them to anon): only the service
-- role may move a resource. The helpers run inside record_transition with the caller's rights, so the
-- service role needs them too.
do $$
declare
    f regprocedure;
begin
    for f in
        select p.oid::regprocedure from pg_proc p
        where p.pronamespace = 'public'::regnamespace
          and p.proname in ('record_transition', 'register_resource', '_rsm_bump_count', '_rsm_check_state')
    loop
        execute format('revoke all on function %s from public, anon, authenticated', f);
        execute format('grant execute on function %s to service_role', f);
    end loop;
end
$$;

notify pgrst, 'reload schema';
