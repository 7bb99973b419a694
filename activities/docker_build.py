"""build_image: a streaming Docker build through the docker SDK's low-level API.

The engine reports build errors as `{"error": ...}` chunks in the stream, not as exceptions (DESIGN
§9), so the stream is read to the end and an error chunk becomes a non-retryable `BuildFailed` whose
message is the failing line and whose details carry the log tail.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import docker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import heartbeating
from state.errors import FailureType
from state.models import BuildImageRequest, BuildImageResult

LOG_TAIL_LINES = 40
_DONE = object()


def image_tag(resource_id: str, version: str) -> str:
    return f"rsm/{resource_id}:{version}"


def _build_failed(message: str, **details: Any) -> ApplicationError:
    return ApplicationError(message, details, type=FailureType.BUILD_FAILED, non_retryable=True)


def _check_context(req: BuildImageRequest) -> Path:
    context = Path(req.context_path)
    if not context.is_dir():
        raise _build_failed(f"build context {context} is not a directory", context=str(context))
    if not os.access(context, os.R_OK | os.X_OK):
        raise _build_failed(f"build context {context} is not readable", context=str(context))
    dockerfile = context / req.dockerfile
    if not dockerfile.is_file():
        raise _build_failed(
            f"no Dockerfile at {dockerfile}", context=str(context), dockerfile=req.dockerfile
        )
    for root, dirs, files in os.walk(context):
        for name in dirs + files:
            path = Path(root, name)
            if not os.access(path, os.R_OK):
                raise _build_failed(
                    f"build context has an unreadable file: {path}", context=str(context)
                )
    return context


class DockerImageBuilder:
    def __init__(self, api: docker.APIClient, default_build_args: dict[str, str] | None = None):
        self._api = api
        # e.g. BASE_IMAGE for machines that cannot reach a registry (the dev stack sets it).
        self._default_build_args = dict(default_build_args or {})

    @activity.defn(name="build_image")
    async def build_image(self, req: BuildImageRequest) -> BuildImageResult:
        context = _check_context(req)
        tag = image_tag(req.resource_id, req.version)
        build_args = {**self._default_build_args, **req.build_args}
        started = time.monotonic()
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def pump() -> None:
            # The SDK's stream is blocking; read it in a thread and hand chunks to the event loop.
            try:
                stream = self._api.build(
                    path=str(context),
                    dockerfile=req.dockerfile,
                    tag=tag,
                    buildargs=build_args,
                    decode=True,
                    rm=True,
                    forcerm=True,
                    network_mode="host",
                    labels={"rsm.resource_id": req.resource_id, "rsm.version": req.version},
                )
                for chunk in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                    if stop.is_set():
                        stream.close()
                        break
            except Exception as exc:  # delivered to the activity, which decides what it means
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        thread = threading.Thread(target=pump, name=f"build-{req.resource_id}", daemon=True)
        image_id: str | None = None
        error: str | None = None
        error_detail: dict[str, Any] = {}
        lines = 0
        async with heartbeating() as progress:
            thread.start()
            try:
                while (chunk := await queue.get()) is not _DONE:
                    if isinstance(chunk, OSError):
                        raise _build_failed(f"cannot read build context: {chunk}")
                    if isinstance(chunk, docker.errors.APIError):
                        raise _build_failed(f"docker refused the build: {chunk.explanation}")
                    if isinstance(chunk, Exception):
                        raise chunk  # the engine is unreachable: temporary, retried
                    if "error" in chunk:
                        error = str(chunk["error"]).strip()
                        error_detail = chunk.get("errorDetail") or {}
                    elif "stream" in chunk:
                        for line in str(chunk["stream"]).splitlines():
                            if line.strip():
                                lines += 1
                                tail.append(line.rstrip())
                                if line.startswith("Step "):
                                    progress.update(step=line.strip())
                        progress.update(lines=lines)
                    elif "aux" in chunk and "ID" in chunk["aux"]:
                        image_id = chunk["aux"]["ID"]
            except asyncio.CancelledError:
                stop.set()
                raise
        if error is not None:
            # The engine's line says which step failed; the step's own last output says why.
            last_output = next(
                (line for line in reversed(tail) if not line.startswith(" ---> ")), ""
            )
            reason = error if not last_output or last_output in error else f"{error}: {last_output}"
            raise _build_failed(
                reason, error=error, error_detail=error_detail, log_tail=list(tail), image=tag
            )
        if image_id is None:
            image_id = (await asyncio.to_thread(self._api.inspect_image, tag))["Id"]
        return BuildImageResult(
            image=tag,
            image_id=image_id,
            log_tail=list(tail)[-10:],
            duration_seconds=round(time.monotonic() - started, 3),
        )
