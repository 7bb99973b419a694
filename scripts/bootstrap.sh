#!/usr/bin/env bash
# Installs everything rsm needs on a fresh Debian machine, idempotently (a second run does nothing):
# Debian packages, the project's virtualenv, and the local base images' ingredients (a bookworm
# rootfs with python3 and the MCP SDK), since no container registry is reachable here.
# Everything that downloads happens here, never at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bootstrap] %s\n' "$*"; }
CACHE_DIR="${RSM_CACHE_DIR:-/var/cache/rsm}"
PYTHON="${RSM_PYTHON:-python3}"

# 1. Debian packages: PostgreSQL, the Docker engine, a static busybox for tiny local images,
#    debootstrap for the Python base image, and docker-registry (distribution 2.8) for the tests
#    that push images to a throwaway registry on 127.0.0.1.
need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v dockerd >/dev/null || need+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v runuser >/dev/null || need+=(util-linux)
command -v chromium >/dev/null || need+=(chromium)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
command -v docker-registry >/dev/null || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  # The package's own service would listen on :5000 on every interface; tests start their own
  # registries on 127.0.0.1, so a service the install just started is turned off again.
  if [[ " ${need[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null \
      && systemctl is-active --quiet docker-registry 2>/dev/null; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

# 2. The virtualenv, reinstalled only when pyproject.toml changes.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.rsm-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "pip install -e .[dev]"
  # pip.conf here may name local indexes that do not exist: drop that noise, keep real errors.
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2> >(grep -v 'is ignored: it is neither' >&2)
  rm -f .venv/.rsm-installed-*
  touch "$stamp"
fi

# 3. Base-image ingredients, shared by every checkout on this machine.
mkdir -p "$CACHE_DIR"
rootfs_tar="$CACHE_DIR/bookworm-python3-rootfs.tar"
if [ ! -s "$rootfs_tar" ]; then
  # The mirror apt already uses on this machine.
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb / && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "bootstrap: no Debian mirror found in apt's sources" >&2; exit 1; }
  log "debootstrap bookworm + python3 from $mirror (about a minute, once)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include=python3 bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
fi
mcp_site="$CACHE_DIR/mcp-site-packages"
if [ ! -f "$mcp_site/.complete" ]; then
  log "installing the MCP SDK for the base image into $mcp_site"
  rm -rf "$mcp_site"
  # Same major version as the project pins; cp311 wheels match bookworm's python3.11. httpx is
  # held below 0.29 as supabase-py holds it in .venv, so pip's check of .venv prints no conflict.
  .venv/bin/pip install -q --disable-pip-version-check --target "$mcp_site" 'mcp>=1.27,<2' 'httpx<0.29' \
    2> >(grep -v 'is ignored: it is neither' >&2)
  touch "$mcp_site/.complete"
fi
# 4. The project image's wheelhouse: its docker build runs with no network (Dockerfile,
#    docker-compose.yml).
if [ ! -f build/wheelhouse/.complete ] || [ pyproject.toml -nt build/wheelhouse/.complete ]; then
  log "project image wheelhouse"
  bash scripts/build_project_image.sh --wheelhouse-only
  touch build/wheelhouse/.complete
fi
# 4. n8n for the n8n workflow lifecycle (its tests and `rsm dev up --n8n`): about 4 minutes and
#    2.3 GB, once per machine, in the cache folder. RSM_SKIP_N8N=1 skips it (those tests then skip).
[ "${RSM_SKIP_N8N:-0}" = 1 ] || RSM_CACHE_DIR="$CACHE_DIR" bash scripts/install_n8n.sh
log "ready"
