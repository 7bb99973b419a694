"""build_image on the real Docker engine, run in temporalio's ActivityEnvironment (heartbeats,
errors), plus the pure reading of the build stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.docker_build import BuildLog, DockerImageBuilder, base_images
from state.models import BuildImageRequest
from tests.helpers import unique_id
from workers.images import BUSYBOX_IMAGE


def test_build_log_prefers_the_failing_steps_stderr_whatever_the_order() -> None:
    for chunks in (
        [
            "Step 2/3 : RUN x\n",
            " ---> Running in ab\n",
            "preparing\n",
            "\x1b[91mcat: nope\n\x1b[0m",
        ],
        [
            "Step 2/3 : RUN x\n",
            "\x1b[91mcat: nope\n\x1b[0m",
            "preparing\n",
            "Removing intermediate container ab\n",
        ],
    ):
        log = BuildLog()
        for chunk in chunks:
            log.feed(chunk)
        assert log.step == "Step 2/3 : RUN x"
        assert (
            log.failure_reason("returned a non-zero code: 1")
            == "returned a non-zero code: 1: cat: nope"
        )


def test_build_log_joins_a_line_the_engine_sent_in_pieces() -> None:
    log = BuildLog()
    for chunk in [
        "Step 2/3 : RUN cat /x\n",
        "\x1b[91mcat: \x1b[0m",
        "\x1b[91m/x: No such file\n\x1b[0m",
    ]:
        log.feed(chunk)
    assert log.failure_reason("returned a non-zero code: 1") == (
        "returned a non-zero code: 1: cat: /x: No such file"
    )


def test_build_log_without_step_output_keeps_the_engine_line_and_a_bounded_tail() -> None:
    log = BuildLog(tail_lines=3)
    for i in range(10):
        log.feed(f"line {i}\n")
    log.feed("Step 1/1 : FROM missing\n")
    assert log.failure_reason("pull access denied") == "pull access denied"
    assert list(log.tail) == ["line 8", "line 9", "Step 1/1 : FROM missing"] and log.lines == 11


def test_base_images_follow_args_build_args_and_stages() -> None:
    dockerfile = """\
# syntax comment
ARG BASE_IMAGE=python:3.11-slim
ARG TOOLS
FROM ${BASE_IMAGE} AS build
RUN true
FROM --platform=linux/amd64 $TOOLS
FROM build
FROM scratch
COPY --from=build /x /x
"""
    assert base_images(dockerfile, {}) == ["python:3.11-slim", ""]
    assert base_images(dockerfile, {"BASE_IMAGE": "rsm/python-mcp:local", "TOOLS": "busybox"}) == [
        "rsm/python-mcp:local",
        "busybox",
    ]


@pytest.fixture
def builder(docker_api: docker.APIClient) -> DockerImageBuilder:
    return DockerImageBuilder(docker_api)


def request(path: Path, rid: str | None = None) -> BuildImageRequest:
    rid = rid or unique_id("t-build")
    return BuildImageRequest(resource_id=rid, name=rid, version="v1", context_path=str(path))


async def test_a_build_heartbeats_its_steps_and_tags_the_image(
    builder: DockerImageBuilder, docker_api: docker.APIClient, tmp_path: Path
) -> None:
    tmp_path.joinpath("Dockerfile").write_text(
        f'FROM {BUSYBOX_IMAGE}\nARG GREETING=hi\nRUN sleep 2.5 && echo $GREETING > /greeting\nCMD ["cat", "/greeting"]\n'
    )
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])
    req = request(tmp_path).model_copy(update={"build_args": {"GREETING": unique_id()}})
    result = await env.run(builder.build_image, req)
    assert result.image == f"rsm/{req.resource_id}:v1"
    assert docker_api.inspect_image(result.image)["Id"] == result.image_id
    steps = {b.get("step") for b in beats if b.get("step")}
    # The engine counts rsm's labels as extra steps, so only the step's number and text are fixed.
    assert any(step.startswith("Step 3/") and "RUN sleep 2.5" in step for step in steps), steps
    docker_api.remove_image(result.image, force=True)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("no-dir", "is not a directory"),
        ("no-dockerfile", "no Dockerfile at"),
        ("bad-base", "base image rsm/no-such-base:never is not on this Docker engine"),
        # The engine's own words, not "cannot read build context: 400 Client Error for http+...".
        ("bad-instruction", "docker refused the build: dockerfile parse error line 2: unknown"),
        ("empty", "Dockerfile"),
    ],
)
async def test_bad_build_input_is_a_named_permanent_failure(
    builder: DockerImageBuilder, tmp_path: Path, layout: str, message: str
) -> None:
    path = tmp_path / "ctx"
    if layout != "no-dir":
        path.mkdir()
    if layout == "bad-base":
        path.joinpath("Dockerfile").write_text("FROM rsm/no-such-base:never\n")
    if layout == "bad-instruction":
        path.joinpath("Dockerfile").write_text(f"FROM {BUSYBOX_IMAGE}\nBOGUSINSTR x\n")
    if layout == "empty":
        path.joinpath("Dockerfile").write_text("")
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(builder.build_image, request(path))
    assert caught.value.type == "BuildFailed" and caught.value.non_retryable
    assert message in caught.value.message
    assert "Client Error" not in caught.value.message, caught.value.message
