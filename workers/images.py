"""Local base images, built once per Docker engine because no registry is reachable here.

- `rsm/busybox:local`: FROM scratch + Debian's static busybox; seconds to build, used by tests that
  need a shell but no Python.
- `rsm/python-mcp:local`: a bookworm rootfs with python3 (made by debootstrap in the bootstrap step)
  imported into Docker, plus the MCP SDK. The example MCP server builds FROM it through its
  BASE_IMAGE build argument; on a machine with a registry the Dockerfile's public default is used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import docker

from workers.services.process import ServiceError

CACHE_DIR = Path(os.environ.get("RSM_CACHE_DIR", "/var/cache/rsm"))
BUSYBOX_IMAGE = "rsm/busybox:local"
ROOTFS_IMAGE = "rsm/bookworm-python3:rootfs"
PYTHON_MCP_IMAGE = "rsm/python-mcp:local"

_BUSYBOX_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
"""

_PYTHON_MCP_DOCKERFILE = f"""\
FROM {ROOTFS_IMAGE}
COPY site-packages/ /usr/local/lib/python3.11/dist-packages/
ENV PYTHONUNBUFFERED=1
CMD ["python3"]
"""


def _has_image(api: docker.APIClient, tag: str) -> bool:
    try:
        api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def _build(api: docker.APIClient, context: Path, tag: str) -> None:
    for chunk in api.build(path=str(context), tag=tag, decode=True, rm=True, network_mode="host"):
        if "error" in chunk:
            raise ServiceError(f"building {tag} failed: {chunk['error'].strip()}")


def ensure_busybox_image(api: docker.APIClient) -> str:
    if _has_image(api, BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise ServiceError(
            "/bin/busybox is missing: apt-get install busybox-static (bootstrap does)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy2(busybox, Path(tmp, "busybox"))
        Path(tmp, "Dockerfile").write_text(_BUSYBOX_DOCKERFILE)
        _build(api, Path(tmp), BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE


def ensure_python_mcp_image(api: docker.APIClient, cache_dir: Path = CACHE_DIR) -> str:
    if _has_image(api, PYTHON_MCP_IMAGE):
        return PYTHON_MCP_IMAGE
    rootfs = cache_dir / "bookworm-python3-rootfs.tar"
    site = cache_dir / "mcp-site-packages"
    if not rootfs.is_file() or not (site / ".complete").exists():
        raise ServiceError(
            f"the base-image ingredients are missing under {cache_dir}: run scripts/bootstrap.sh"
        )
    if not _has_image(api, ROOTFS_IMAGE):
        repository, tag = ROOTFS_IMAGE.split(":")
        api.import_image_from_file(str(rootfs), repository=repository, tag=tag)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(
            site, Path(tmp, "site-packages"), ignore=shutil.ignore_patterns(".complete")
        )
        Path(tmp, "Dockerfile").write_text(_PYTHON_MCP_DOCKERFILE)
        _build(api, Path(tmp), PYTHON_MCP_IMAGE)
    return PYTHON_MCP_IMAGE


def ensure_base_images(api: docker.APIClient, cache_dir: Path = CACHE_DIR) -> dict[str, str]:
    return {
        "busybox": ensure_busybox_image(api),
        "python_mcp": ensure_python_mcp_image(api, cache_dir),
    }
