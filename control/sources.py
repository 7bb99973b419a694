"""Turning what an operator points at (a directory, a file) into a resource id and a version."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_IGNORED = {".git", "__pycache__", ".venv", "node_modules"}


class SourceError(ValueError):
    """The path given cannot be a resource of the requested type; the message says why."""


def resource_id_from(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if not slug:
        raise SourceError(f"cannot derive a resource id from {name!r}: pass --id")
    return slug[:63]


def directory_version(path: Path) -> str:
    """A content hash of the directory: the same sources give the same version (and image tag), any
    change gives a new one, so a redeploy is a new version by construction."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if _IGNORED.intersection(rel.parts):
            continue
        digest.update(str(rel).encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def mcp_source(path: Path) -> Path:
    resolved = path.expanduser().resolve()
    if not resolved.is_dir():
        raise SourceError(
            f"{path} is not a directory: an MCP server is a directory with a Dockerfile"
        )
    if not (resolved / "Dockerfile").is_file():
        raise SourceError(f"{path} has no Dockerfile")
    return resolved
