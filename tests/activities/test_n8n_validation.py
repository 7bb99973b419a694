"""n8n export validation against the generated 2.8.4 node catalog: one failing input per rule, the
valid examples passing, and the broken example naming every problem at once. Pure: no n8n needed,
except the last test, which regenerates the catalog from the installed n8n and compares."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.n8n_activities import N8nValidator, deploy_body, load_catalog, n8n_name
from state.n8n_models import N8nFailureType, Rule, TakenWebhookPath, ValidateN8nRequest
from state.n8n_validation import CATALOG_DIR, N8nCatalog, catalog_file, validate_workflow
from tests.conftest import EXAMPLES, REPO
from workers.services.n8n import n8n_binary

N8N = EXAMPLES / "n8n"


@pytest.fixture(scope="module")
def catalog() -> N8nCatalog:
    return load_catalog("2.8.4")


def hello() -> dict[str, Any]:
    return dict(json.loads((N8N / "hello-webhook.json").read_text()))


def rules(doc: dict[str, Any] | str, catalog: N8nCatalog, **kwargs: Any) -> list[Rule]:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return [p.rule for p in validate_workflow(text, catalog, **kwargs).problems]


def test_catalog_is_generated_from_n8n_2_8_4(catalog: N8nCatalog) -> None:
    assert catalog.n8n_version == "2.8.4"
    assert len(catalog.nodes) > 400
    webhook = catalog.nodes["n8n-nodes-base.webhook"]
    assert webhook.trigger and webhook.webhook is not None and 2 in webhook.versions
    assert "httpHeaderAuth" in webhook.credentials
    # n8n's own rule: a manual trigger cannot activate a workflow; a schedule can.
    assert not catalog.nodes["n8n-nodes-base.manualTrigger"].trigger
    assert catalog.nodes["n8n-nodes-base.scheduleTrigger"].trigger
    assert not catalog.nodes["n8n-nodes-base.set"].trigger


@pytest.mark.parametrize("example", ["hello-webhook.json", "notify-with-credential.json"])
def test_valid_examples_pass(example: str, catalog: N8nCatalog) -> None:
    report = validate_workflow((N8N / example).read_text(), catalog)
    assert report.problems == []
    assert report.trigger_nodes and report.webhooks


def test_credentials_become_requirements_not_errors(catalog: N8nCatalog) -> None:
    report = validate_workflow((N8N / "notify-with-credential.json").read_text(), catalog)
    assert report.ok
    [req] = report.requirements
    assert (req.type, req.credential_type, req.name, req.credential_id, req.nodes) == (
        "credential",
        "httpHeaderAuth",
        "Notifier API token",
        "rsmNotifierToken",
        ["Forward to notifier"],
    )
    assert [(w.path, w.method) for w in report.webhooks] == [("rsm-notify", "POST")]


def test_broken_example_names_every_problem_at_once(catalog: N8nCatalog) -> None:
    report = validate_workflow((N8N / "broken.json").read_text(), catalog)
    found = {(p.rule, p.node) for p in report.problems}
    assert found == {
        (Rule.SHAPE, "Half-written"),
        (Rule.DUPLICATE_NODE_NAME, "Shape"),
        (Rule.UNKNOWN_CONNECTION_TARGET, "Fetch items"),
        (Rule.UNKNOWN_CONNECTION_SOURCE, "Deleted trigger"),
        (Rule.PLAINTEXT_SECRET, "Fetch items"),
        (Rule.UNSUPPORTED_TYPE_VERSION, "Shape"),
        (Rule.UNKNOWN_NODE_TYPE, "Legacy step"),
        (Rule.NO_TRIGGER, None),
    }
    assert len(report.problems) == 8
    # The credential is still reported as a requirement, and the secret never leaves the file.
    assert [r.name for r in report.requirements] == ["Items API"]
    assert "3f9a7c1e" not in report.model_dump_json()
    assert report.summary().startswith("8 problem(s): ")


@pytest.mark.parametrize(
    "text",
    ['{"name": "x", "nodes": [', "{'nodes': []}", ""],
)
def test_json_that_does_not_parse(text: str, catalog: N8nCatalog) -> None:
    [problem] = validate_workflow(text, catalog).problems
    assert problem.rule is Rule.JSON
    assert "line 1" in problem.message


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "JSON object"),
        ({"connections": {}}, "`nodes` is missing"),
        ({"nodes": {}, "connections": {}}, "`nodes` must be a list"),
        ({"nodes": ["webhook"], "connections": {}}, "nodes[0] must be an object"),
        ({"nodes": [], "connections": []}, "`connections` must be an object"),
        ({"nodes": []}, "`connections` is missing"),
        ({"nodes": [{"type": "n8n-nodes-base.noOp", "typeVersion": 1}], "connections": {}}, "no `name`"),
        ({"nodes": [{"name": "A", "typeVersion": 1}], "connections": {}}, "A has no `type`"),
        ({"nodes": [{"name": "A", "type": "n8n-nodes-base.noOp", "typeVersion": "1"}], "connections": {}}, "numeric `typeVersion`"),
        ({"nodes": [{"name": "A", "type": "n8n-nodes-base.noOp", "typeVersion": 1, "parameters": []}], "connections": {}}, "`parameters` must be an object"),
        ({"nodes": [{"name": "A", "type": "n8n-nodes-base.noOp", "typeVersion": 1}], "connections": {"A": {"main": {}}}}, "must be a list"),
        ({"nodes": [{"name": "A", "type": "n8n-nodes-base.noOp", "typeVersion": 1}], "connections": {"A": {"main": [[{"type": "main"}]]}}}, "names no node"),
    ],
)  # fmt: skip
def test_wrong_shapes(doc: Any, fragment: str, catalog: N8nCatalog) -> None:
    problems = validate_workflow(json.dumps(doc), catalog, deploy_inactive=True).problems
    shape = [p for p in problems if p.rule is Rule.SHAPE]
    assert shape, problems
    assert any(fragment in p.message for p in shape), shape


def test_duplicate_node_names(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["nodes"][1]["name"] = "Webhook"
    report = validate_workflow(json.dumps(doc), catalog)
    [dup] = [p for p in report.problems if p.rule is Rule.DUPLICATE_NODE_NAME]
    assert dup.node == "Webhook" and "2 nodes" in dup.message


def test_connection_to_a_deleted_node(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["nodes"] = [n for n in doc["nodes"] if n["name"] != "Respond to Webhook"]
    doc["nodes"][0]["parameters"]["responseMode"] = "onReceived"
    problems = validate_workflow(json.dumps(doc), catalog).problems
    assert [(p.rule, p.node) for p in problems] == [(Rule.UNKNOWN_CONNECTION_TARGET, "Webhook")]
    assert "'Respond to Webhook'" in problems[0].message


def test_connection_from_a_deleted_node(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["connections"]["Gone"] = {"main": [[{"node": "Webhook", "type": "main", "index": 0}]]}
    assert rules(doc, catalog) == [Rule.UNKNOWN_CONNECTION_SOURCE]


def test_null_outputs_are_empty_outputs(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["connections"]["Webhook"]["main"].append(None)
    assert rules(doc, catalog) == []


def test_unknown_node_type_suggests_the_close_one(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["nodes"][1]["type"] = "n8n-nodes-base.respondToWebhooks"
    [problem] = validate_workflow(json.dumps(doc), catalog).problems
    assert problem.rule is Rule.UNKNOWN_NODE_TYPE
    assert "did you mean n8n-nodes-base.respondToWebhook?" in problem.message


def test_unsupported_type_version_lists_the_supported_ones(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["nodes"][0]["typeVersion"] = 3
    [problem] = validate_workflow(json.dumps(doc), catalog).problems
    assert problem.rule is Rule.UNSUPPORTED_TYPE_VERSION
    assert problem.node == "Webhook"
    assert "(it supports 1, 1.1, 2, 2.1)" in problem.message
    doc["nodes"][0]["typeVersion"] = 2.0  # 2 and 2.0 are the same version
    assert rules(doc, catalog) == []


@pytest.mark.parametrize(
    ("parameters", "kind"),
    [
        ({"apiKey": "abcd1234efgh5678"}, "API key"),
        ({"options": {"password": "hunter2hunter2"}}, "password"),
        ({"headerParameters": {"parameters": [{"name": "X-API-Key", "value": "k-123456789"}]}}, "API key"),
        ({"headerParameters": {"parameters": [{"name": "Authorization", "value": "Bearer abcdefgh12345678"}]}}, "bearer token"),
        ({"body": "Bearer eyJhbGciOiJIUzI1NiJ9.abc.def"}, "bearer token"),
        ({"url": "https://x.invalid/?key=sk-abcdefghijklmnopqrstu"}, "API key"),
    ],
)  # fmt: skip
def test_plaintext_secrets_are_errors(
    parameters: dict[str, Any], kind: str, catalog: N8nCatalog
) -> None:
    doc = hello()
    doc["nodes"][1]["parameters"].update(parameters)
    [problem] = validate_workflow(json.dumps(doc), catalog).problems
    assert problem.rule is Rule.PLAINTEXT_SECRET
    assert problem.node == "Respond to Webhook"
    assert kind in problem.message
    secret = json.dumps(parameters).split('"')[-2]
    assert secret not in problem.message


def test_secrets_read_from_expressions_or_credentials_are_fine(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["nodes"][1]["parameters"].update(
        {
            "apiKey": "={{ $env.NOTIFY_KEY }}",
            "password": "",
            "headerParameters": {
                "parameters": [{"name": "Authorization", "value": "=Bearer {{ $env.TOKEN }}"}]
            },
            "authentication": "genericCredentialType",
        }
    )
    assert rules(doc, catalog) == []


def test_webhook_path_taken_by_another_active_workflow(catalog: N8nCatalog) -> None:
    doc = hello()
    taken = {"rsm-hello": "other-workflow"}
    report = validate_workflow(json.dumps(doc), catalog, taken_webhook_paths=taken)
    [problem] = report.problems
    assert problem.rule is Rule.WEBHOOK_PATH_TAKEN
    assert problem.node == "Webhook" and "other-workflow" in problem.message
    # Leading/trailing slashes are the same path to n8n.
    doc["nodes"][0]["parameters"]["path"] = "/rsm-hello/"
    assert rules(doc, catalog, taken_webhook_paths=taken) == [Rule.WEBHOOK_PATH_TAKEN]
    assert rules(doc, catalog, taken_webhook_paths={"elsewhere": "other"}) == []


def test_two_webhooks_on_one_path_in_the_same_workflow(catalog: N8nCatalog) -> None:
    doc = hello()
    twin = copy.deepcopy(doc["nodes"][0])
    twin.update(name="Webhook 2", id="twin", webhookId="twin")
    doc["nodes"].append(twin)
    assert rules(doc, catalog) == [Rule.DUPLICATE_WEBHOOK_PATH]
    twin["parameters"]["httpMethod"] = "POST"  # another method on the same path is allowed
    assert rules(doc, catalog) == []


def test_no_trigger_is_an_error_unless_deploy_inactive(catalog: N8nCatalog) -> None:
    doc = hello()
    doc["nodes"][0].update(type="n8n-nodes-base.manualTrigger", typeVersion=1, parameters={})
    assert rules(doc, catalog) == [Rule.NO_TRIGGER]
    assert rules(doc, catalog, deploy_inactive=True) == []
    # A disabled trigger cannot start anything either.
    doc = hello()
    doc["nodes"][0]["disabled"] = True
    assert rules(doc, catalog) == [Rule.NO_TRIGGER]


async def test_validation_activity_raises_one_named_error_with_every_problem() -> None:
    env = ActivityEnvironment()
    validator = N8nValidator()
    with pytest.raises(ApplicationError) as info:
        await env.run(
            validator.validate_n8n_workflow,
            ValidateN8nRequest(resource_id="r", workflow_json=(N8N / "broken.json").read_text()),
        )
    err = info.value
    assert err.type == N8nFailureType.VALIDATION_FAILED and err.non_retryable
    details = err.details[0]
    assert len(details["problems"]) == 8
    assert details["requirements"][0]["credential_type"] == "httpHeaderAuth"

    report = await env.run(
        validator.validate_n8n_workflow,
        ValidateN8nRequest(
            resource_id="r",
            workflow_json=(N8N / "hello-webhook.json").read_text(),
            taken_webhook_paths=[TakenWebhookPath(path="other", resource_id="x")],
        ),
    )
    assert report.ok and report.webhook_paths == ["rsm-hello"]

    with pytest.raises(ApplicationError) as info:
        await env.run(
            validator.validate_n8n_workflow,
            ValidateN8nRequest(resource_id="r", workflow_json="{}", n8n_version="0.1.0"),
        )
    assert info.value.type == N8nFailureType.CATALOG_MISSING
    assert "generate_n8n_catalog.py" in info.value.message


def test_deploy_body_keeps_only_what_the_public_api_accepts() -> None:
    body = deploy_body((N8N / "hello-webhook.json").read_text(), n8n_name("Hello", "r-1"))
    assert set(body) == {"name", "nodes", "connections", "settings"}
    assert body["name"] == "Hello [rsm/r-1]"
    assert len(n8n_name("x" * 300, "r-1")) == 128


@pytest.mark.skipif(n8n_binary() is None, reason="n8n is not installed: run scripts/install_n8n.sh")
def test_committed_catalog_equals_a_fresh_generation(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/generate_n8n_catalog.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text()) == json.loads(catalog_file("2.8.4", CATALOG_DIR).read_text())
