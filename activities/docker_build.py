"""build_image: a streaming Docker build through the docker SDK's low-level API, and the push of
the result to a registry when one is configured (RSM_REGISTRY).

The engine reports build errors as `{"error": ...}` chunks in the stream, not as exceptions (DESIGN
§9), so the stream is read to the end and an error chunk becomes a non-retryable `BuildFailed` whose
message is the failing line and whose details carry the log tail. A push streams the same way.

The push is part of build_image, not a step of its own: the image exists only on the engine that
built it, and with several workers (DESIGN §7) a separate activity could land on another host. So a
worker with a registry returns the pushed reference `<registry>/rsm/<id>:<version>@sha256:...` as the
built image, and every later step (the Kubernetes Deployment, a rollback, the local Docker runtime,
which finds the same image under that reference) uses it unchanged: no workflow change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from pathlib import Path
from typing import Any

import docker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeat import Progress, heartbeating
from state.errors import FailureType
from state.models import BuildImageRequest, BuildImageResult
from state.runtime_models import ImagePushFailure

LOG_TAIL_LINES = 40
_DONE = object()


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_STDERR_START = "\x1b[91m"  # the classic builder colours a step's stderr red
# Lines the engine itself writes between a step's own output.
_ENGINE_LINES = (" ---> ", "Removing intermediate container", "Step ", "Successfully ")


class BuildLog:
    """Reads the build stream's text: keeps a tail, the current step, and the failing step's last
    stderr and stdout lines. A step's stdout and stderr arrive interleaved in no fixed order, so the
    reason for a failure prefers the last stderr line (`cat: can't open ...`) over the last stdout."""

    def __init__(self, tail_lines: int = LOG_TAIL_LINES) -> None:
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.lines = 0
        self.step: str | None = None
        self.step_stderr: str | None = None
        self.step_stdout: str | None = None
        self._partial = ""
        self._stderr = False

    def feed(self, text: str) -> None:
        """Take one stream chunk. A line may come in several chunks (`cat: ` then the rest), so
        text after the last newline waits for the next chunk."""
        self._stderr = self._stderr or text.startswith(_STDERR_START)
        self._partial += _ANSI.sub("", text)
        *complete, self._partial = self._partial.split("\n")
        for raw in complete:
            self._line(raw, self._stderr)
            self._stderr = text.startswith(_STDERR_START) and bool(self._partial)

    def flush(self) -> None:
        if self._partial:
            self._line(self._partial, self._stderr)
            self._partial, self._stderr = "", False

    def _line(self, raw: str, is_stderr: bool) -> None:
        line = raw.rstrip()
        if not line.strip():
            return
        self.lines += 1
        self.tail.append(line)
        if line.startswith("Step "):
            self.step, self.step_stderr, self.step_stdout = line.strip(), None, None
        elif line.startswith(_ENGINE_LINES):
            return
        elif is_stderr:
            self.step_stderr = line.strip()
        else:
            self.step_stdout = line.strip()

    def failure_reason(self, engine_error: str) -> str:
        """The engine's line says which step failed; the step's own output says why."""
        self.flush()
        why = self.step_stderr or self.step_stdout
        return engine_error if not why or why in engine_error else f"{engine_error}: {why}"


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def base_images(dockerfile: str, build_args: dict[str, str]) -> list[str]:
    """The images a Dockerfile builds FROM (global ARG defaults and build args substituted;
    `scratch` and references to earlier stages left out)."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False

    def expand(text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(3)
            return build_args.get(name, args.get(name, m.group(2) or ""))

        return _VAR.sub(sub, text)

    for raw in dockerfile.replace("\\\n", " ").splitlines():
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].upper()
        if keyword == "ARG" and not seen_from and len(words) > 1:
            name, _, default = words[1].partition("=")
            args[name] = default
        elif keyword == "FROM":
            seen_from = True
            rest = [w for w in words[1:] if not w.startswith("--")]
            if not rest:
                continue
            image = expand(rest[0])
            if len(rest) >= 3 and rest[1].upper() == "AS":
                stages.add(rest[2].lower())
            if image.lower() != "scratch" and image.lower() not in stages:
                images.append(image)
    return images


def image_tag(resource_id: str, version: str) -> str:
    return f"rsm/{resource_id}:{version}"


def registry_reference(registry: str, local_tag: str) -> tuple[str, str]:
    """The repository and tag a local `rsm/<id>:<version>` gets in the registry."""
    repository, _, tag = local_tag.rpartition(":")
    return f"{registry}/{repository}", tag


# Words of the engine's push errors that mean the registry did not answer (the engine's own
# `dial tcp ...: connect: connection refused`, a reset, a timeout, a 5xx or 429): worth a retry.
# Anything else (unauthorized, denied, name unknown, "server gave HTTP response to HTTPS client",
# a certificate it does not trust, a manifest it refuses) needs a person.
_UNREACHABLE = (
    "connection refused",
    "connection reset",
    "no such host",
    "timeout",  # i/o timeout, TLS handshake timeout, Client.Timeout exceeded
    "no route to host",
    "network is unreachable",
    "eof",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
    "toomanyrequests",
    "429 too many requests",
)


def push_failure(registry: str, reference: str, error: str) -> ApplicationError:
    """An engine's push error as a named failure: temporary when the registry did not answer."""
    lowered = error.lower()
    unreachable = any(word in lowered for word in _UNREACHABLE)
    if unreachable:
        message = f"registry {registry} did not answer the push of {reference}: {error}"
    else:
        message = f"registry {registry} refused the push of {reference}: {error}"
    return ApplicationError(
        message,
        {"registry": registry, "reference": reference, "error": error},
        type=ImagePushFailure.REGISTRY_UNREACHABLE if unreachable else ImagePushFailure.REJECTED,
        non_retryable=not unreachable,
    )


async def stream_in_thread(
    open_stream: Callable[[], Iterable[Any]], thread_name: str
) -> AsyncGenerator[Any, None]:
    """The docker SDK's streams block; read one in a thread and hand its chunks to the event loop,
    so heartbeats keep flowing and cancellation is honoured. An exception raised while opening or
    reading the stream arrives as a chunk: the caller decides what it means. Use it inside
    `contextlib.aclosing`, so a cancelled caller stops the reader at the next chunk."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def pump() -> None:
        try:
            stream = open_stream()
            for chunk in stream:
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
                if stop.is_set():
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
                    break
        except Exception as exc:  # delivered to the activity, which decides what it means
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    threading.Thread(target=pump, name=thread_name, daemon=True).start()
    try:
        while (chunk := await queue.get()) is not _DONE:
            yield chunk
    finally:
        stop.set()


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
    def __init__(
        self,
        api: docker.APIClient,
        default_build_args: dict[str, str] | None = None,
        allow_pull: bool = False,
        registry: str | None = None,
        heartbeat_interval_seconds: float = 2.0,
    ):
        self._api = api
        # e.g. BASE_IMAGE for machines that cannot reach a registry (the dev stack sets it).
        self._default_build_args = dict(default_build_args or {})
        # Off by default: a missing base image is named at once instead of the engine trying a
        # registry (which, on a machine without one, fails slowly with a DNS error).
        self._allow_pull = allow_pull
        # host[:port][/path]: every built image is pushed there and deployed by its digest.
        self._registry = registry
        self._heartbeat_interval = heartbeat_interval_seconds

    def _check_base_images(self, dockerfile: Path, build_args: dict[str, str]) -> None:
        for image in base_images(dockerfile.read_text(errors="replace"), build_args):
            if not image:
                continue  # an unset build argument: the engine names it ("base name ... blank")
            try:
                self._api.inspect_image(image)
            except docker.errors.ImageNotFound:
                raise _build_failed(
                    f"base image {image} is not on this Docker engine and pulling is off"
                    " (build it locally, pass a BASE_IMAGE build argument, or set"
                    " RSM_DOCKER_ALLOW_PULL=true)",
                    image=image,
                    dockerfile=str(dockerfile),
                ) from None

    @activity.defn(name="build_image")
    async def build_image(self, req: BuildImageRequest) -> BuildImageResult:
        context = _check_context(req)
        tag = image_tag(req.resource_id, req.version)
        build_args = {**self._default_build_args, **req.build_args}
        if not self._allow_pull:
            await asyncio.to_thread(self._check_base_images, context / req.dockerfile, build_args)
        started = time.monotonic()
        log = BuildLog()

        def open_build() -> Iterable[Any]:
            return self._api.build(
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

        image_id: str | None = None
        error: str | None = None
        error_detail: dict[str, Any] = {}
        image = tag
        async with heartbeating(self._heartbeat_interval) as progress:
            async with contextlib.aclosing(
                stream_in_thread(open_build, f"build-{req.resource_id}")
            ) as chunks:
                async for chunk in chunks:
                    # APIError first: it is an OSError too (through requests), and its
                    # explanation is the engine's own words (a Dockerfile parse error).
                    if isinstance(chunk, docker.errors.APIError):
                        raise _build_failed(f"docker refused the build: {chunk.explanation}")
                    if isinstance(chunk, OSError):
                        raise _build_failed(f"cannot read build context: {chunk}")
                    if isinstance(chunk, Exception):
                        raise chunk  # the engine is unreachable: temporary, retried
                    if "error" in chunk:
                        error = str(chunk["error"]).strip()
                        error_detail = chunk.get("errorDetail") or {}
                    elif "stream" in chunk:
                        log.feed(str(chunk["stream"]))
                        progress.update(step=log.step, lines=log.lines)
                    elif "aux" in chunk and "ID" in chunk["aux"]:
                        image_id = chunk["aux"]["ID"]
            if error is None and self._registry is not None:
                image = await self._push(tag, self._registry, progress)
                log.tail.append(f"pushed {image}")
        if error is not None:
            raise _build_failed(
                log.failure_reason(error),
                error=error,
                error_detail=error_detail,
                step=log.step,
                log_tail=list(log.tail),
                image=tag,
            )
        if image_id is None:
            image_id = (await asyncio.to_thread(self._api.inspect_image, tag))["Id"]
        return BuildImageResult(
            image=image,
            image_id=image_id,
            log_tail=list(log.tail)[-10:],
            duration_seconds=round(time.monotonic() - started, 3),
        )

    async def _push(self, local_tag: str, registry: str, progress: Progress) -> str:
        """Tag the built image into the registry's namespace, push it, and return the reference
        pinned by the digest the registry stored (`repo:tag@sha256:...`): a Deployment then runs
        exactly the bytes that were built, even if the tag is pushed again later."""
        repository, tag = registry_reference(registry, local_tag)
        reference = f"{repository}:{tag}"
        try:
            await asyncio.to_thread(self._api.tag, local_tag, repository, tag)
        except docker.errors.APIError as exc:
            if exc.is_server_error():
                raise  # the engine's own trouble: temporary, retried
            raise push_failure(registry, reference, str(exc.explanation)) from None
        layers: dict[str, str] = {}
        digest: str | None = None
        error: str | None = None
        progress.update(step=f"pushing {reference}", layers=0, layers_pushed=0)

        def open_push() -> Iterable[Any]:
            return self._api.push(repository, tag=tag, stream=True, decode=True)

        async with contextlib.aclosing(stream_in_thread(open_push, f"push-{reference}")) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, docker.errors.APIError) and not chunk.is_server_error():
                    raise push_failure(registry, reference, str(chunk.explanation))
                if isinstance(chunk, Exception):
                    raise chunk  # the engine is unreachable or failing: temporary, retried
                if "error" in chunk:
                    # The engine reports a failed push inside the stream, not as an exception.
                    error = str((chunk.get("errorDetail") or {}).get("message") or chunk["error"])
                elif (chunk.get("aux") or {}).get("Digest"):
                    digest = str(chunk["aux"]["Digest"])
                elif "id" in chunk and "status" in chunk:
                    layers[str(chunk["id"])] = str(chunk["status"])
                    progress.update(
                        layers=len(layers),
                        layers_pushed=sum(
                            s in ("Pushed", "Layer already exists") for s in layers.values()
                        ),
                    )
        if error is not None:
            raise push_failure(registry, reference, error.strip())
        if digest is None:
            # An engine that sent no aux record still knows the digest the registry returned.
            inspected = await asyncio.to_thread(self._api.inspect_image, reference)
            digest = next(
                (
                    d.partition("@")[2]
                    for d in inspected.get("RepoDigests") or []
                    if d.startswith(f"{repository}@")
                ),
                None,
            )
            if digest is None:
                raise push_failure(registry, reference, "the engine reported no digest")
        pushed = f"{reference}@{digest}"
        progress.update(step=f"pushed {reference}", pushed=pushed)
        activity.logger.info("pushed %s", pushed)
        return pushed
