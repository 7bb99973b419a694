"""The push of a built image to a real registry (Debian's docker-registry on 127.0.0.1, see
tests/registry_fixtures.py) inside build_image, and the Kubernetes Deployment naming the pushed
reference; plus the naming of push errors, which the engine reports inside its JSON stream."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.docker_build import DockerImageBuilder, push_failure, registry_reference
from state.models import BuildImageRequest
from state.runtime_models import ImagePushFailure
from tests.activities.test_kubernetes_runtime import apply, kmock_cluster
from tests.helpers import unique_id
from workers.images import BUSYBOX_IMAGE
from workers.services.process import free_port
from workers.services.registry import LocalRegistry

pytest_plugins = ["tests.registry_fixtures"]


def context(tmp_path: Path) -> Path:
    tmp_path.joinpath("Dockerfile").write_text(
        f'FROM {BUSYBOX_IMAGE}\nRUN echo {unique_id()} > /id\nCMD ["cat", "/id"]\n'
    )
    return tmp_path


def request(path: Path) -> BuildImageRequest:
    rid = unique_id("t-push")
    return BuildImageRequest(resource_id=rid, name=rid, version="v1", context_path=str(path))


def manifest_digest(registry: LocalRegistry, repository: str, tag: str) -> str:
    """The digest the registry serves for repository:tag (HEAD on the manifest, as a puller asks)."""
    head = urllib.request.Request(
        f"{registry.url}/v2/{repository}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(head, timeout=5) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_registry_reference_keeps_the_repository_and_tag() -> None:
    assert registry_reference("127.0.0.1:5000", "rsm/toolbox:34fbc1e8bcef") == (
        "127.0.0.1:5000/rsm/toolbox",
        "34fbc1e8bcef",
    )
    assert registry_reference("registry.example.org/team", "rsm/a.b:v1") == (
        "registry.example.org/team/rsm/a.b",
        "v1",
    )


@pytest.mark.parametrize(
    ("error", "failure_type"),
    [
        (
            'Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused',
            ImagePushFailure.REGISTRY_UNREACHABLE,
        ),
        ("received unexpected HTTP status: 503 Service Unavailable", "RegistryUnreachable"),
        ("net/http: TLS handshake timeout", ImagePushFailure.REGISTRY_UNREACHABLE),
        ("unauthorized: authentication required", ImagePushFailure.REJECTED),
        ("denied: requested access to the resource is denied", ImagePushFailure.REJECTED),
        (
            'Get "https://r.example:5000/v2/": http: server gave HTTP response to HTTPS client',
            ImagePushFailure.REJECTED,
        ),
    ],
)
def test_push_errors_are_named_temporary_or_permanent(error: str, failure_type: str) -> None:
    err = push_failure("r.example:5000", "r.example:5000/rsm/x:v1", error)
    assert err.type == failure_type
    assert err.non_retryable is (failure_type == ImagePushFailure.REJECTED)
    assert error in err.message and "r.example:5000/rsm/x:v1" in err.message


async def test_build_pushes_to_the_registry_and_the_deployment_names_the_pushed_image(
    docker_api: docker.APIClient, registry: LocalRegistry, tmp_path: Path
) -> None:
    builder = DockerImageBuilder(
        docker_api, registry=registry.address, heartbeat_interval_seconds=0.01
    )
    req = request(context(tmp_path))
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details[0])

    result = await env.run(builder.build_image, req)

    repository = f"rsm/{req.resource_id}"
    reference = f"{registry.address}/{repository}:v1"
    assert result.image.startswith(f"{reference}@sha256:")
    digest = result.image.partition("@")[2]
    # The registry itself has the tag, and serves the manifest under the digest we deploy.
    assert registry.tags(repository) == ["v1"]
    assert manifest_digest(registry, repository, "v1") == digest
    assert result.log_tail[-1] == f"pushed {result.image}"
    # The engine finds the built image under the pushed reference (the local runtime runs it so).
    assert docker_api.inspect_image(result.image)["Id"] == result.image_id
    # The push heartbeated its progress (a slow push still proves the worker alive).
    assert any(str(b.get("step", "")).startswith(f"pushing {reference}") for b in beats), beats

    # The Kubernetes Deployment applied with the built image names the registry's, by digest.
    async with kmock_cluster() as cluster:
        applied = await apply(cluster, cluster.request(req.resource_id, image=result.image))
        assert applied.deployment.image == result.image
        live = await cluster.read_deployment(req.resource_id)
        assert live.spec.template.spec.containers[0].image == result.image
        assert live.metadata.annotations["rsm.image"] == result.image

    # Built again (a retried activity), the same content pushes to the same digest.
    again = await ActivityEnvironment().run(builder.build_image, req)
    assert again.image == result.image
    for ref in {result.image.partition("@")[0], f"rsm/{req.resource_id}:v1"}:
        docker_api.remove_image(ref, force=True)


async def test_a_push_to_a_registry_that_is_not_listening_is_named_and_retried(
    docker_api: docker.APIClient, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    builder = DockerImageBuilder(docker_api, registry=address)
    req = request(context(tmp_path))
    with pytest.raises(ApplicationError) as caught:
        await asyncio.wait_for(ActivityEnvironment().run(builder.build_image, req), 60)
    err = caught.value
    assert err.type == ImagePushFailure.REGISTRY_UNREACHABLE
    assert not err.non_retryable  # a registry that is down may be back on the next attempt
    assert err.message.startswith(f"registry {address} did not answer the push of {address}/rsm/")
    assert "connection refused" in err.message and "\n" not in err.message
    assert "Traceback" not in err.message
    assert err.details[0]["registry"] == address
    for ref in (f"{address}/rsm/{req.resource_id}:v1", f"rsm/{req.resource_id}:v1"):
        docker_api.remove_image(ref, force=True)


async def test_a_push_the_registry_refuses_is_a_named_permanent_failure(
    docker_api: docker.APIClient, read_only_registry: LocalRegistry, tmp_path: Path
) -> None:
    builder = DockerImageBuilder(docker_api, registry=read_only_registry.address)
    req = request(context(tmp_path))
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(builder.build_image, req)
    err = caught.value
    assert err.type == ImagePushFailure.REJECTED and err.non_retryable
    assert f"registry {read_only_registry.address} refused the push" in err.message
    assert "405" in err.message
    address = read_only_registry.address
    for ref in (f"{address}/rsm/{req.resource_id}:v1", f"rsm/{req.resource_id}:v1"):
        docker_api.remove_image(ref, force=True)
