-- A resource's `version` is the version it runs, not the one it was registered with: each
-- `deployed` row carries the version it deployed (an MCP server's and an n8n workflow's in
-- metadata.version, a team's in metadata.deployment.version), and the resource follows it. A
-- redeploy that rolls back deploys the good version again, so the column ends on it; a redeploy
-- whose build fails deploys nothing and changes nothing.

create or replace function public.follow_deployed_version() returns trigger
language plpgsql as $$
declare
    deployed text := coalesce(new.metadata ->> 'version', new.metadata -> 'deployment' ->> 'version');
begin
    if deployed is not null then
        update public.resource_states
           set version = deployed
         where resource_id = new.resource_id and version is distinct from deployed;
    end if;
    return null;
end;
$$;

-- Only the service role moves resources (as the other functions, 20261203000003).
revoke all on function public.follow_deployed_version() from public, anon, authenticated;
grant execute on function public.follow_deployed_version() to service_role;

drop trigger if exists state_transitions_follow_deployed_version on public.state_transitions;
create trigger state_transitions_follow_deployed_version
    after insert on public.state_transitions
    for each row when (new.to_state = 'deployed')
    execute function public.follow_deployed_version();

notify pgrst, 'reload schema';
