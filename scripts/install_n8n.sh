#!/usr/bin/env bash
# Installs the n8n server the tests and the dev stack run (DESIGN §9) into a cache folder outside the
# repo, idempotently: a second run with the same version does nothing. Called from scripts/bootstrap.sh
# and by CI before the tests; nothing is downloaded at test run time.
#
#   scripts/install_n8n.sh            # installs n8n $RSM_N8N_VERSION (default 2.8.4)
#   RSM_N8N_DIR=/some/dir scripts/install_n8n.sh
#
# The binary ends up at $RSM_N8N_DIR/node_modules/.bin/n8n; workers/services/n8n.py looks there.
set -euo pipefail

log() { printf '[install_n8n] %s\n' "$*"; }
VERSION="${RSM_N8N_VERSION:-2.8.4}"
CACHE_DIR="${RSM_CACHE_DIR:-/var/cache/rsm}"
DIR="${RSM_N8N_DIR:-$CACHE_DIR/n8n-$VERSION}"
STAMP="$DIR/.complete"

installed() { [ -f "$STAMP" ] && [ -x "$DIR/node_modules/.bin/n8n" ]; }
if installed; then
  log "n8n $VERSION already installed in $DIR"
  exit 0
fi

# Every checkout on this machine shares the cache folder: one install at a time, and whoever waited
# finds it done.
mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9
if installed; then
  log "n8n $VERSION was installed in $DIR meanwhile"
  exit 0
fi

command -v npm >/dev/null || { echo "install_n8n: npm is not installed (n8n $VERSION needs node >= 20)" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "install_n8n: node $node_major is too old for n8n $VERSION (needs >= 20)" >&2
  exit 1
fi

# A half-finished install (interrupted, or failed) is started over rather than patched.
rm -rf "$DIR"
mkdir -p "$DIR"
# n8n's dependency tree names an xlsx tarball hosted outside the npm registry; pinning the last
# registry release keeps the whole install on the registry (DESIGN §9).
cat >"$DIR/package.json" <<EOF
{
  "name": "rsm-n8n-runtime",
  "private": true,
  "dependencies": { "n8n": "$VERSION" },
  "overrides": { "xlsx": "0.18.5" }
}
EOF

log "npm install n8n@$VERSION into $DIR (about 4 minutes and 2.3 GB, once)"
start=$(date +%s)
(cd "$DIR" && npm install --no-audit --no-fund --loglevel=error >"$DIR/npm-install.log" 2>&1) || {
  tail -30 "$DIR/npm-install.log" >&2
  echo "install_n8n: npm install failed; full log in $DIR/npm-install.log" >&2
  exit 1
}
[ -x "$DIR/node_modules/.bin/n8n" ] || { echo "install_n8n: npm finished but $DIR/node_modules/.bin/n8n is missing" >&2; exit 1; }
touch "$STAMP"
log "installed n8n $VERSION in $(( $(date +%s) - start )) s"
