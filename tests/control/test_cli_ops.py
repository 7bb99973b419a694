"""The operator commands of `rsm` as a pipeline uses them: exit codes, --json, refusals."""

from __future__ import annotations

import json

from tests.conftest import EXAMPLES
from tests.control.test_cli import Cli, rsm  # noqa: F401  (the fixture)
from tests.helpers import unique_id


async def test_a_gated_resource_is_approved_from_the_cli_and_waited_for(rsm: Cli) -> None:  # noqa: F811
    rid = unique_id("t-ops")
    code, out, err = await rsm(
        "register",
        "mcp",
        str(EXAMPLES / "mcp/toolbox"),
        "--id",
        rid,
        "--actor",
        "alice",
        "--approver",
        "dana",
        "--requirement",
        "credential:slack-token",
        "--wait",
        "--timeout",
        "20",
    )
    # Followed, it shows what it waits on at the gate, then times out saying so.
    assert code == 2, out + err
    blocked = [line.split("… ")[1] for line in out.splitlines() if "… blocked on:" in line]
    assert blocked[-1] == "blocked on: credential:slack-token, approval", out
    assert "timed out after 20s; still running, waiting on credential:slack-token, approval" in err
    code, out, err = await rsm("wait", rid, "--state", "available", "--timeout", "120")
    assert code == 0, err

    code, out, _ = await rsm("awaiting", "--json")
    mine = [r for r in json.loads(out) if r["resource_id"] == rid]
    assert [sorted(r["waiting_on"]) for r in mine] == [
        ["approval:approval", "credential:slack-token"]
    ]

    code, _, err = await rsm("approve", rid, "--as", "alice")
    assert code == 1 and "refused: alice registered this resource and may not approve it" in err
    code, _, err = await rsm("approve", rid, "--as", "bob")
    assert code == 1 and "bob may not approve this resource (approvers: dana)" in err
    code, out, err = await rsm("approve", rid, "--as", "dana", "--reason", "reviewed")
    assert code == 0, err
    assert "approved by dana" in out

    code, out, err = await rsm("wait", rid, "--state", "active", "--timeout", "2")
    assert code == 2 and "timed out after 2s" in err  # the credential is still missing
    code, out, err = await rsm("satisfy", rid, "slak-token", "--actor", "vault")
    assert code == 1 and f"{rid} has no requirement 'slak-token'" in err  # a typo adds nothing
    assert "slack-token" in err and "pass --add TYPE" in err
    code, out, err = await rsm("satisfy", rid, "other:slack-token", "--actor", "vault")
    assert code == 1 and f"{rid} has no requirement 'other:slack-token'" in err
    # The TYPE:NAME form `rsm awaiting` prints names it as well as the bare name.
    code, out, err = await rsm("satisfy", rid, "credential:slack-token", "--actor", "vault")
    assert code == 0, err
    code, out, err = await rsm("wait", rid, "--state", "active", "--timeout", "60")
    assert code == 0, err

    code, out, _ = await rsm("ls", "--state", "active", "--search", rid, "--json")
    assert [r["resource_id"] for r in json.loads(out)] == [rid]
    code, out, _ = await rsm("overview", "--json")
    assert any(
        c["resource_type"] == "mcp_server" and c["state"] == "active" and c["count"] >= 1
        for c in json.loads(out)
    )

    code, _, err = await rsm("command", rid, "retry")
    assert code == 1 and "refused: retry needs a failed resource; this one is active" in err
    code, _, err = await rsm("transition", rid, "built", "--actor", "ops", "--reason", "x")
    assert code == 1 and "illegal transition active -> built for mcp_server" in err
    code, out, err = await rsm("command", rid, "archive", "--actor", "ops", "--reason", "done")
    assert code == 0, err
    code, _, err = await rsm("wait", rid, "--state", "active", "--timeout", "30")
    assert code == 1 and f"{rid} is archived: done" in err
    # Writes to an archived resource are refused by name, not with a traceback.
    code, _, err = await rsm("command", rid, "retry")
    assert code == 1 and "refused: this resource's lifecycle has ended (it is archived)" in err
    assert "Traceback" not in err
