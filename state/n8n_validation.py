"""Validation of an n8n workflow export against the node catalog of the n8n it will run on.

Pure: the caller hands in the export's text, the catalog and the webhook paths our other workflows
hold, and gets back every problem at once (rule, node, message), the credentials the workflow needs
(requirements, not errors), its webhooks and its trigger nodes. No rule stops at the first problem,
so an operator fixes a broken export in one round.

The catalog (`N8nCatalog`) is generated from an installed n8n by scripts/generate_n8n_catalog.py
into state/n8n_catalog/n8n-<version>.json; `catalog_file` names that file, callers read it.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from state.n8n_models import (
    N8nProblem,
    N8nRequirement,
    N8nValidationReport,
    N8nWebhook,
    Rule,
)

CATALOG_DIR = Path(__file__).resolve().parent / "n8n_catalog"


class N8nWebhookSpec(BaseModel):
    """How a node's production webhook URL is made: /<prefix>/<value of `parameter`>."""

    parameter: str
    method_parameter: str | None = None
    default_method: str = "GET"
    prefix: str = "webhook"


class N8nNodeType(BaseModel):
    display_name: str
    versions: list[float]
    default_version: float
    # n8n's own test for activation: the node has a trigger, poll or webhook method and is not one
    # of the manual STARTING_NODES.
    trigger: bool
    manual_trigger: bool = False
    group: list[str] = Field(default_factory=list)
    credentials: list[str] = Field(default_factory=list)
    webhook: N8nWebhookSpec | None = None
    webhook_versions: list[float] = Field(default_factory=list)


class N8nCatalog(BaseModel):
    n8n_version: str
    packages: dict[str, str] = Field(default_factory=dict)
    starting_nodes: list[str] = Field(default_factory=list)
    nodes: dict[str, N8nNodeType]


def catalog_file(n8n_version: str, directory: Path = CATALOG_DIR) -> Path:
    return directory / f"n8n-{n8n_version}.json"


# Parameter names (lower-cased, separators dropped) whose literal value is a secret.
_SECRET_KEYS = frozenset(
    {
        "apikey",
        "xapikey",
        "apitoken",
        "authtoken",
        "token",
        "accesstoken",
        "refreshtoken",
        "bearertoken",
        "authorization",
        "password",
        "passwd",
        "secret",
        "clientsecret",
        "secretkey",
        "privatekey",
    }
)
# Literal values that are secrets whatever their key: bearer tokens and well-known key formats.
_SECRET_VALUES = (
    (re.compile(r"^\s*bearer\s+[A-Za-z0-9._~+/=-]{8,}\s*$", re.IGNORECASE), "bearer token"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), "API key"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), "GitHub token"),
    (re.compile(r"\bxox[abpr]-[A-Za-z0-9-]{10,}"), "Slack token"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "AWS access key"),
)


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _is_literal(value: object) -> bool:
    """A non-empty string that is not an n8n expression (`={{ $env.TOKEN }}` reads it at run time)."""
    if not isinstance(value, str) or not value.strip():
        return False
    return not (value.startswith("=") or "{{" in value)


def _secret_kind(key: str) -> str:
    k = _norm_key(key)
    if k in {"password", "passwd"}:
        return "password"
    if k in {"authorization", "bearertoken"}:
        return "bearer token"
    if "key" in k:
        return "API key"
    return "secret"


def _secrets(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(parameter path, kind) of every plaintext secret under `value`; the secret itself is never
    part of the result, so the problem list can be recorded and printed safely."""
    if isinstance(value, dict):
        # n8n's header/query/body parameter lists are {name, value} pairs.
        pair_name = value.get("name")
        if isinstance(pair_name, str) and _norm_key(pair_name) in _SECRET_KEYS:
            if _is_literal(value.get("value")):
                yield f"{path}.value ({pair_name})", _secret_kind(pair_name)
                return
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _norm_key(key) in _SECRET_KEYS and _is_literal(item):
                yield child, _secret_kind(key)
            else:
                yield from _secrets(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _secrets(item, f"{path}[{i}]")
    elif _is_literal(value):
        for pattern, kind in _SECRET_VALUES:
            if pattern.search(value):
                yield path, kind
                return


def _fmt_version(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


class _Validator:
    def __init__(
        self,
        catalog: N8nCatalog,
        taken_webhook_paths: Mapping[str, str],
        deploy_inactive: bool,
    ) -> None:
        self.catalog = catalog
        self.taken = {p.strip("/"): owner for p, owner in taken_webhook_paths.items()}
        self.deploy_inactive = deploy_inactive
        self.report = N8nValidationReport()

    def problem(self, rule: Rule, message: str, node: str | None = None) -> None:
        item = N8nProblem(rule=rule, node=node, message=message)
        if item not in self.report.problems:
            self.report.problems.append(item)

    def run(self, text: str) -> N8nValidationReport:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            self.problem(
                Rule.JSON, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            )
            return self.report
        if not isinstance(doc, dict):
            self.problem(
                Rule.SHAPE,
                f"an n8n export is a JSON object with `nodes` and `connections`, not a {type(doc).__name__}",
            )
            return self.report
        if isinstance(doc.get("name"), str):
            self.report.workflow_name = doc["name"]
        named, complete = self.nodes(doc.get("nodes"))
        self.connections(doc.get("connections"), {str(n["name"]) for n in named})
        for node in named:
            if isinstance(node.get("parameters"), dict):
                for path, kind in _secrets(node["parameters"], ""):
                    self.problem(
                        Rule.PLAINTEXT_SECRET,
                        f"parameter `{path}` holds a {kind} in plain text: put it in an n8n "
                        "credential (or an expression) and reference that instead",
                        node["name"],
                    )
            if isinstance(node.get("credentials"), dict):
                self.credentials(node)
        for node in complete:
            self.node_type(node)
        self.webhooks(complete)
        self.triggers(complete)
        return self.report

    def nodes(self, raw: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(nodes with a name, nodes complete enough to check against the catalog).

        A node with a name but a broken field still counts for names and connections, so one
        missing `typeVersion` does not also turn every link to that node into a second problem.
        """
        if raw is None:
            self.problem(Rule.SHAPE, "`nodes` is missing: an export lists its nodes in `nodes`")
            return [], []
        if not isinstance(raw, list):
            self.problem(Rule.SHAPE, f"`nodes` must be a list, not a {type(raw).__name__}")
            return [], []
        named: list[dict[str, Any]] = []
        complete: list[dict[str, Any]] = []
        for i, node in enumerate(raw):
            if not isinstance(node, dict):
                self.problem(Rule.SHAPE, f"nodes[{i}] must be an object, not {type(node).__name__}")
                continue
            name = node.get("name")
            label = name if isinstance(name, str) and name else None
            where = label or f"nodes[{i}]"
            ok = True
            if label is None:
                self.problem(Rule.SHAPE, f"nodes[{i}] has no `name`")
            if not isinstance(node.get("type"), str) or not node["type"]:
                self.problem(Rule.SHAPE, f"{where} has no `type`", label)
                ok = False
            version = node.get("typeVersion")
            if isinstance(version, bool) or not isinstance(version, int | float):
                self.problem(Rule.SHAPE, f"{where} has no numeric `typeVersion`", label)
                ok = False
            for field in ("parameters", "credentials"):
                if field in node and not isinstance(node[field], dict):
                    self.problem(Rule.SHAPE, f"{where}: `{field}` must be an object", label)
                    ok = False
            if label is not None:
                named.append(node)
                if ok:
                    complete.append(node)
        self.report.node_count = len(named)
        counts = Counter(str(n["name"]) for n in named)
        for name, count in counts.items():
            if count > 1:
                self.problem(
                    Rule.DUPLICATE_NODE_NAME,
                    f"{count} nodes are named {name!r}: connections refer to nodes by name, so "
                    "names must be unique",
                    name,
                )
        return named, complete

    def connections(self, raw: object, names: set[str]) -> None:
        if raw is None:
            self.problem(Rule.SHAPE, "`connections` is missing (an export without links has {})")
            return
        if not isinstance(raw, dict):
            self.problem(Rule.SHAPE, f"`connections` must be an object, not a {type(raw).__name__}")
            return
        for source, outputs in raw.items():
            if source not in names:
                self.problem(
                    Rule.UNKNOWN_CONNECTION_SOURCE,
                    f"connections start at {source!r}, which is not a node of this workflow",
                    source,
                )
            if not isinstance(outputs, dict):
                self.problem(Rule.SHAPE, f"connections[{source!r}] must be an object", source)
                continue
            for kind, branches in outputs.items():
                if not isinstance(branches, list):
                    self.problem(
                        Rule.SHAPE, f"connections[{source!r}][{kind!r}] must be a list", source
                    )
                    continue
                for index, branch in enumerate(branches):
                    # n8n writes null for an output with nothing attached.
                    for link in branch or []:
                        target = link.get("node") if isinstance(link, dict) else None
                        if not isinstance(target, str):
                            self.problem(
                                Rule.SHAPE,
                                f"a {kind} link from output {index} of {source!r} names no node",
                                source,
                            )
                        elif target not in names:
                            self.problem(
                                Rule.UNKNOWN_CONNECTION_TARGET,
                                f"output {index} ({kind}) of {source!r} goes to {target!r}, "
                                "which is not a node of this workflow",
                                source,
                            )

    def node_type(self, node: dict[str, Any]) -> None:
        type_name, version = node["type"], float(node["typeVersion"])
        known = self.catalog.nodes.get(type_name)
        ver = self.catalog.n8n_version
        if known is None:
            close = difflib.get_close_matches(type_name, self.catalog.nodes, n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.problem(
                Rule.UNKNOWN_NODE_TYPE,
                f"node type {type_name} is not installed in n8n {ver}{hint}",
                node["name"],
            )
        elif version not in {float(v) for v in known.versions}:
            supported = ", ".join(_fmt_version(v) for v in known.versions)
            self.problem(
                Rule.UNSUPPORTED_TYPE_VERSION,
                f"{type_name} typeVersion {_fmt_version(version)} is not supported by n8n {ver} "
                f"(it supports {supported})",
                node["name"],
            )

    def credentials(self, node: dict[str, Any]) -> None:
        for cred_type, ref in (node.get("credentials") or {}).items():
            # Exports write {"id", "name"}; old ones only the name.
            cred_id = ref.get("id") if isinstance(ref, dict) else None
            cred_name = ref.get("name") if isinstance(ref, dict) else ref
            name = str(cred_name or cred_id or cred_type)
            for req in self.report.requirements:
                if req.credential_type == cred_type and req.name == name:
                    if node["name"] not in req.nodes:
                        req.nodes.append(node["name"])
                    break
            else:
                self.report.requirements.append(
                    N8nRequirement(
                        name=name,
                        credential_type=str(cred_type),
                        credential_id=str(cred_id) if cred_id is not None else None,
                        nodes=[node["name"]],
                    )
                )

    def webhooks(self, nodes: list[dict[str, Any]]) -> None:
        seen: dict[tuple[str, str], str] = {}
        for node in nodes:
            known = self.catalog.nodes.get(node["type"])
            if known is None or known.webhook is None or node.get("disabled") is True:
                continue
            if float(node["typeVersion"]) not in {float(v) for v in known.webhook_versions}:
                continue
            spec = known.webhook
            params = node.get("parameters") or {}
            path = params.get(spec.parameter) or node.get("webhookId")
            if not isinstance(path, str) or not path.strip("/") or path.startswith("="):
                continue  # n8n derives the path itself (or at run time): nothing to collide with
            path = path.strip("/")
            method = params.get(spec.method_parameter) if spec.method_parameter else None
            method = str(method or spec.default_method).upper()
            hook = N8nWebhook(node=node["name"], path=path, method=method, prefix=spec.prefix)
            self.report.webhooks.append(hook)
            if (path, method) in seen:
                self.problem(
                    Rule.DUPLICATE_WEBHOOK_PATH,
                    f"{method} /{spec.prefix}/{path} is also served by {seen[(path, method)]!r}",
                    node["name"],
                )
            seen[(path, method)] = node["name"]
            owner = self.taken.get(path)
            if owner is not None:
                self.problem(
                    Rule.WEBHOOK_PATH_TAKEN,
                    f"webhook path {path!r} is already used by our active workflow {owner}",
                    node["name"],
                )

    def triggers(self, nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            known = self.catalog.nodes.get(node["type"])
            if known is not None and known.trigger and node.get("disabled") is not True:
                self.report.trigger_nodes.append(node["name"])
        if not self.report.trigger_nodes and not self.deploy_inactive:
            self.problem(
                Rule.NO_TRIGGER,
                "no enabled trigger, poller or webhook node: n8n cannot activate this workflow "
                "(a manual trigger does not count); register it with --deploy-inactive to deploy "
                "it without activating",
            )


def validate_workflow(
    text: str,
    catalog: N8nCatalog,
    *,
    taken_webhook_paths: Mapping[str, str] | None = None,
    deploy_inactive: bool = False,
) -> N8nValidationReport:
    """Every problem of the export `text` for the n8n `catalog` describes, at once.

    `taken_webhook_paths` maps each webhook path our other active workflows serve to the resource
    that owns it.
    """
    return _Validator(catalog, taken_webhook_paths or {}, deploy_inactive).run(text)
