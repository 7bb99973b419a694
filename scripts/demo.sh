#!/usr/bin/env bash
# One command for a new user: installs everything, brings the stack up (Postgres, Temporal + UI,
# Docker, the worker) and walks the example MCP server to `active`, then prints its history.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
rsm=.venv/bin/rsm
echo "== rsm dev up"
$rsm dev up
echo "== rsm register mcp examples/mcp/toolbox --wait"
$rsm register mcp examples/mcp/toolbox --owner platform --actor "${USER:-operator}" --wait
echo "== rsm history toolbox"
$rsm history toolbox
cat <<MSG

Temporal UI, every active resource:
  http://127.0.0.1:${RSM_TEMPORAL_UI_PORT:-8233}/namespaces/default/workflows?query=ResourceState%3D%22active%22
Try:  .venv/bin/rsm status toolbox   |   .venv/bin/rsm command toolbox deactivate
Stop: .venv/bin/rsm dev down
MSG
