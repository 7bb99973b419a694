"""Turning what an operator points at (a directory, a file) into a resource id and a version."""

from __future__ import annotations

import hashlib
import json
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


def mcp_source(path: Path, what: str = "an MCP server is a directory with a Dockerfile") -> Path:
    resolved = path.expanduser().resolve()
    if not resolved.is_dir():
        raise SourceError(f"{path} is not a directory: {what}")
    if not (resolved / "Dockerfile").is_file():
        raise SourceError(f"{path} has no Dockerfile")
    return resolved


def n8n_export(path: Path) -> tuple[Path, str, str, str]:
    """(absolute path, text, version, display name) of an n8n export file; the version is a content
    hash, the name falls back to the file name. The text is returned even when it does not parse:
    validation is the lifecycle's job, so a broken export is recorded with every problem."""
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise SourceError(f"{path} is not a file: an n8n workflow is an exported JSON file")
    text = resolved.read_text(encoding="utf-8", errors="replace")
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    name = resolved.stem
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("name"), str) and doc["name"].strip():
        name = doc["name"].strip()
    return resolved, text, version, name
