#!/usr/bin/env python3
"""Generate the n8n node catalog (state/n8n_catalog/n8n-<version>.json) from an installed n8n.

The catalog is what validation checks a workflow export against: every node type the target n8n
knows, the typeVersions it supports, whether the node can start an active workflow (n8n's own test:
the node class has a `trigger`, `poll` or `webhook` method and is not one of n8n's manual
STARTING_NODES), its production webhook path parameter, and the credential types it declares.

Nothing is typed by hand: node itself loads every node class the installed node packages list in
their package.json (`n8n.nodes`), exactly as n8n's loader does, and reports each version's
description. Run it after scripts/install_n8n.sh:

    .venv/bin/python scripts/generate_n8n_catalog.py [--n8n-dir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CATALOG_DIR = REPO / "state" / "n8n_catalog"
DEFAULT_VERSION = os.environ.get("RSM_N8N_VERSION", "2.8.4")
NODE_PACKAGES = ("n8n-nodes-base", "@n8n/n8n-nodes-langchain")

# Runs inside the n8n install folder. Loads each node class like n8n's DirectoryLoader (require the
# file, instantiate every exported class) and prints one JSON document on stdout.
_DUMP_JS = r"""
const fs = require('fs');
const path = require('path');
const packages = JSON.parse(process.argv[1]);
const n8nDir = path.dirname(require.resolve('n8n/package.json'));
const constants = require(path.join(n8nDir, 'dist', 'constants.js'));
const out = {
  n8n_version: require('n8n/package.json').version,
  starting_nodes: constants.STARTING_NODES,
  packages: {},
  nodes: [],
  errors: [],
};
const webhookInfo = (w) => ({
  name: w.name, path: w.path, httpMethod: w.httpMethod, isFullPath: !!w.isFullPath,
  nodeType: w.nodeType || null,
});
const describe = (pkg, instance, version) => {
  const d = instance.description;
  const versions = Array.isArray(d.version) ? d.version : [d.version];
  return {
    type: `${pkg}.${d.name}`,
    display_name: d.displayName,
    versions: version === undefined ? versions : [Number(version)],
    group: d.group || [],
    hidden: !!d.hidden,
    credentials: (d.credentials || []).map((c) => c.name),
    webhooks: (d.webhooks || []).map(webhookInfo),
    polling: !!d.polling,
    has_trigger: typeof instance.trigger === 'function',
    has_poll: typeof instance.poll === 'function',
    has_webhook: typeof instance.webhook === 'function',
  };
};
// Some node packages do not export their package.json: find them where npm put them instead.
const packageRoot = (pkg) => {
  for (const base of [path.join(process.cwd(), 'node_modules'), path.join(n8nDir, 'node_modules')]) {
    if (fs.existsSync(path.join(base, pkg, 'package.json'))) return path.join(base, pkg);
  }
  throw new Error(`package ${pkg} is not installed`);
};
for (const pkg of packages) {
  const root = packageRoot(pkg);
  const pkgJson = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
  out.packages[pkg] = pkgJson.version;
  for (const rel of pkgJson.n8n.nodes) {
    let mod;
    try {
      mod = require(path.join(root, rel));
    } catch (e) {
      out.errors.push(`${pkg}/${rel}: ${e.message}`);
      continue;
    }
    for (const Cls of Object.values(mod)) {
      if (typeof Cls !== 'function') continue;
      let instance;
      try { instance = new Cls(); } catch (e) { continue; }
      if (!instance || !instance.description) continue;
      if (instance.nodeVersions) {
        for (const [version, node] of Object.entries(instance.nodeVersions)) {
          const entry = describe(pkg, node, version);
          entry.type = `${pkg}.${instance.description.name}`;
          entry.default_version = instance.description.defaultVersion ?? null;
          out.nodes.push(entry);
        }
      } else {
        out.nodes.push(describe(pkg, instance));
      }
    }
  }
}
process.stdout.write(JSON.stringify(out));
"""


def _path_parameter(webhooks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The production webhook whose URL path a person chooses through the node's `path` parameter.

    Nodes whose path is fixed or derived from the node's own webhookId (app triggers) cannot collide
    with another workflow, so they get no entry.
    """
    for hook in webhooks:
        if hook.get("name") not in {"default", "setup"}:
            continue
        path = str(hook.get("path") or "")
        if '$parameter["path"]' not in path or not hook.get("isFullPath"):
            continue
        method = str(hook.get("httpMethod") or "GET")
        method_parameter = None
        if '$parameter["httpMethod"]' in method:
            method_parameter, method = "httpMethod", "GET"
        return {
            "parameter": "path",
            "method_parameter": method_parameter,
            "default_method": method,
            # n8n serves form and MCP triggers under their own URL prefix, the rest under /webhook.
            "prefix": hook.get("nodeType") or "webhook",
        }
    return None


def _sort_key(version: float) -> float:
    return float(version)


def build_catalog(dump: dict[str, Any]) -> dict[str, Any]:
    starting = set(dump["starting_nodes"])
    nodes: dict[str, dict[str, Any]] = {}
    for entry in dump["nodes"]:
        node = nodes.setdefault(
            entry["type"],
            {
                "display_name": entry["display_name"],
                "versions": [],
                "default_version": None,
                "trigger": False,
                "manual_trigger": entry["type"] in starting,
                "group": [],
                "credentials": [],
                "webhook": None,
                "webhook_versions": [],
            },
        )
        node["versions"].extend(entry["versions"])
        if entry.get("default_version") is not None:
            node["default_version"] = entry["default_version"]
        can_start = entry["has_trigger"] or entry["has_poll"] or entry["has_webhook"]
        if can_start and entry["type"] not in starting:
            node["trigger"] = True
        node["group"] = sorted(set(node["group"]) | set(entry["group"]))
        node["credentials"] = sorted(set(node["credentials"]) | set(entry["credentials"]))
        hook = _path_parameter(entry["webhooks"]) if entry["has_webhook"] else None
        if hook is not None:
            node["webhook"] = hook  # the newest version's wins: versions share the parameter
            node["webhook_versions"].extend(entry["versions"])
    for node in nodes.values():
        node["versions"] = sorted(set(node["versions"]), key=_sort_key)
        node["webhook_versions"] = sorted(set(node["webhook_versions"]), key=_sort_key)
        if node["default_version"] is None:
            node["default_version"] = node["versions"][-1]
        if node["webhook"] is None:
            del node["webhook_versions"]
    return {
        "n8n_version": dump["n8n_version"],
        "generated_by": "scripts/generate_n8n_catalog.py",
        "packages": dump["packages"],
        "starting_nodes": sorted(starting),
        "nodes": dict(sorted(nodes.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n8n-version", default=DEFAULT_VERSION)
    parser.add_argument("--n8n-dir", type=Path, help="install folder (default: the cache folder)")
    parser.add_argument("--out", type=Path, help="output file (default: state/n8n_catalog/...)")
    args = parser.parse_args(argv)
    cache = Path(os.environ.get("RSM_CACHE_DIR", "/var/cache/rsm"))
    n8n_dir = args.n8n_dir or Path(os.environ.get("RSM_N8N_DIR", cache / f"n8n-{args.n8n_version}"))
    if not (n8n_dir / "node_modules" / "n8n" / "package.json").exists():
        print(f"no n8n installed in {n8n_dir}: run scripts/install_n8n.sh first", file=sys.stderr)
        return 1
    result = subprocess.run(
        ["node", "-e", _DUMP_JS, json.dumps(list(NODE_PACKAGES))],
        cwd=n8n_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(f"node failed:\n{result.stderr[-4000:]}", file=sys.stderr)
        return 1
    dump = json.loads(result.stdout)
    if dump["n8n_version"] != args.n8n_version:
        print(f"{n8n_dir} holds n8n {dump['n8n_version']}, not {args.n8n_version}", file=sys.stderr)
        return 1
    for error in dump["errors"]:
        print(f"warning: could not load {error}", file=sys.stderr)
    catalog = build_catalog(dump)
    out = args.out or CATALOG_DIR / f"n8n-{catalog['n8n_version']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(catalog, indent=1, sort_keys=False) + "\n")
    triggers = sum(1 for n in catalog["nodes"].values() if n["trigger"])
    print(
        f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}: "
        f"{len(catalog['nodes'])} node types ({triggers} can start an active workflow) "
        f"from {', '.join(f'{k}@{v}' for k, v in catalog['packages'].items())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
