"""Choices `rsm dev up` makes (the services themselves are exercised by every other test)."""

from __future__ import annotations

import contextlib

import docker
import pytest

from tests.helpers import unique_id
from workers.devstack import resume_containers, use_n8n
from workers.images import BUSYBOX_IMAGE


@pytest.mark.parametrize(
    ("asked", "configured", "running", "expected"),
    [
        (True, False, False, True),  # --n8n
        (None, True, False, True),  # RSM_N8N=1
        (None, False, False, False),  # neither, and none running
        # `dev up --n8n` then `dev up`: the n8n already up stays the worker's (it was dropped).
        (None, False, True, True),
    ],
)
def test_dev_up_keeps_a_running_n8n_in_use(
    asked: bool | None, configured: bool, running: bool, expected: bool
) -> None:
    assert use_n8n(asked, configured, running) is expected


def test_dev_up_starts_again_the_containers_of_running_resources(
    docker_client: docker.DockerClient,
) -> None:
    # What `dev down` leaves when it stops the engine it started: the containers exited.
    running, archived = unique_id("t-resume"), unique_id("t-resume")
    containers = [
        docker_client.containers.run(
            BUSYBOX_IMAGE,
            ["sleep", "300"],
            detach=True,
            network_mode="none",
            labels={"rsm.resource_id": rid},
            name=f"rsm-{rid}",
        )
        for rid in (running, archived)
    ]
    try:
        for container in containers:
            container.stop(timeout=0)
        assert resume_containers(docker_client, {running, "something-else"}) == [f"rsm-{running}"]
        for container in containers:
            container.reload()
        assert [c.status for c in containers] == ["running", "exited"]
    finally:
        for container in containers:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
