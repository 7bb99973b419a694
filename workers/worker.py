"""The lifecycle worker: every workflow and activity on one task queue, real clients injected.

More workers on more machines share the queue (DESIGN §7); each one needs a Docker engine because
builds run here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import docker
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.docker_build import DockerImageBuilder
from activities.docker_runtime import LocalDockerRuntime
from activities.gates import GateActivities
from activities.kubernetes_portforward import (
    PortForwardingHealthChecker,
    ServicePortForwarder,
    choose_access,
)
from activities.kubernetes_runtime import KubernetesRuntime
from activities.kubernetes_service_health import ServiceHealthChecker
from activities.mcp_health import McpHealthChecker
from activities.n8n_activities import (
    N8nApi,
    N8nDeployer,
    N8nValidator,
    N8nWebhookRegistry,
    n8n_activities,
)
from activities.team_runtime import TeamDockerRuntime
from activities.transitions import TransitionRecorder
from activities.webhooks import WebhookDeliverer
from state.n8n_queries import N8nQueries
from state.postgres import PostgresStore, apply_migrations
from state.runtime_models import KubernetesRuntimeConfig
from state.settings import RsmSettings
from state.store import StateStore
from state.store_factory import store_from_settings, uses_supabase
from state.webhook_store import WebhookStore
from workflows.mcp_lifecycle import McpLifecycleWorkflow
from workflows.n8n_lifecycle import N8nLifecycleWorkflow
from workflows.reported_lifecycle import ReportedLifecycleWorkflow
from workflows.team_lifecycle import TeamLifecycleWorkflow

log = logging.getLogger("rsm.worker")

WORKFLOWS: Sequence[type] = (
    McpLifecycleWorkflow,
    N8nLifecycleWorkflow,
    TeamLifecycleWorkflow,
    ReportedLifecycleWorkflow,
)


def sandbox_runner() -> SandboxedWorkflowRunner:
    # The domain package and pydantic are deterministic and safe to share with the sandbox.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("state", "pydantic")
    )


@dataclass
class LifecycleActivities:
    recorder: TransitionRecorder
    builder: DockerImageBuilder
    runtime: LocalDockerRuntime
    health: McpHealthChecker | PortForwardingHealthChecker
    gates: GateActivities
    n8n_validator: N8nValidator
    n8n_webhooks: N8nWebhookRegistry
    n8n_deployer: N8nDeployer
    team: TeamDockerRuntime
    webhooks: WebhookDeliverer | None = None
    kubernetes: KubernetesRuntime | None = None
    # A team's GET of its health path through its Service; None: asked as the URL says (the
    # Service's DNS name or the endpoint template), with the runtime's configuration.
    service_health: ServiceHealthChecker | None = None

    def all(self) -> list[object]:
        activities: list[object] = [
            self.recorder.register_resource,
            self.recorder.record_transition,
            self.gates.record_requirement,
            self.gates.list_requirements,
            self.gates.link_dependencies,
            self.gates.list_dependents,
            self.builder.build_image,
            self.runtime.deploy,
            self.runtime.stop_runtime,
            self.health.health_check,
            *n8n_activities(self.n8n_validator, self.n8n_webhooks, self.n8n_deployer),
            self.team.deploy_team,
            self.team.scale_team,
            self.team.team_health,
            self.team.stop_team,
        ]
        if self.webhooks is not None:
            activities.append(self.webhooks.deliver_transition_webhooks)
        if self.kubernetes is not None:
            k = self.kubernetes
            service = self.service_health or ServiceHealthChecker(k.config)
            activities += [
                k.apply,
                k.wait_rollout,
                k.scale,
                k.deactivate,
                k.delete,
                k.rollback,
                service.service_health,
            ]
        return activities


def in_cluster(settings: RsmSettings) -> bool:
    """A worker in a pod (the service account's environment) with no kubeconfig of its own."""
    return settings.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def kubernetes_api_client(settings: RsmSettings) -> object:
    from kubernetes import config as k8s_config
    from kubernetes.client import ApiClient

    if in_cluster(settings):
        k8s_config.load_incluster_config()
        return ApiClient()
    return k8s_config.new_client_from_config(
        config_file=str(settings.kubeconfig) if settings.kubeconfig else None
    )


def kubernetes_wiring(
    settings: RsmSettings,
) -> tuple[KubernetesRuntime, ServicePortForwarder | None]:
    """The runtime, and the port-forwarder its health checks (MCP, and teams' HTTP check through
    the Service) go through when the worker reaches Services from outside the cluster
    (RSM_KUBERNETES_ACCESS, chosen by choose_access)."""
    access = choose_access(
        settings.kubernetes_access, settings.kubernetes_endpoint_template, in_cluster(settings)
    )
    config = KubernetesRuntimeConfig(
        namespace=settings.kubernetes_namespace,
        # Only the template mode puts an operator's URL in the endpoint; the others record the
        # Service's DNS name, which a port-forward recognises and tunnels to.
        endpoint_template=settings.kubernetes_endpoint_template if access == "template" else None,
    )
    runtime = KubernetesRuntime(kubernetes_api_client(settings), config)  # type: ignore[arg-type]
    if access != "port-forward":
        return runtime, None
    # A client of its own: port-forwards must never share one with the runtime's threads.
    forwarder = ServicePortForwarder(kubernetes_api_client(settings), config)  # type: ignore[arg-type]
    log.info("health checks reach Kubernetes Services through port-forwards on 127.0.0.1")
    return runtime, forwarder


def real_activities(store: StateStore, settings: RsmSettings) -> LifecycleActivities:
    base_url = settings.docker_host
    api = docker.APIClient(base_url=base_url) if base_url else docker.APIClient()
    client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    build_args = {"BASE_IMAGE": settings.mcp_base_image} if settings.mcp_base_image else {}
    # Webhook subscriptions live beside the Postgres store (on Supabase none are delivered yet).
    webhook_store = WebhookStore(store.pool) if isinstance(store, PostgresStore) else None
    kubernetes, forwarder = (
        kubernetes_wiring(settings) if settings.kubernetes_enabled else (None, None)
    )
    health: McpHealthChecker | PortForwardingHealthChecker = McpHealthChecker()
    if forwarder is not None:
        health = PortForwardingHealthChecker(McpHealthChecker(), forwarder)
    # Teams' HTTP health through their Service, reached as the MCP check reaches it.
    service_health = (
        ServiceHealthChecker(kubernetes.config, forwarder) if kubernetes is not None else None
    )
    return LifecycleActivities(
        recorder=TransitionRecorder(
            store, webhook_store.any_active if webhook_store is not None else None
        ),
        builder=DockerImageBuilder(
            api,
            default_build_args=build_args,
            allow_pull=settings.docker_allow_pull,
            registry=settings.registry,
        ),
        runtime=LocalDockerRuntime(client),
        team=TeamDockerRuntime(client),
        health=health,
        gates=GateActivities(store),
        n8n_validator=N8nValidator(),
        # A small pool of its own, opened on first use (the query is not in the store protocol);
        # on Supabase there is no direct DSN and n8n's own clash check is the only one.
        n8n_webhooks=N8nWebhookRegistry(
            None if uses_supabase(settings) else N8nQueries.lazy(settings.database_url)
        ),
        # Without RSM_N8N_URL and RSM_N8N_API_KEY an n8n deploy fails with a message saying so.
        n8n_deployer=N8nDeployer(
            N8nApi.connect(settings.n8n_url, settings.n8n_api_key.get_secret_value())
            if settings.n8n_url and settings.n8n_api_key
            else None
        ),
        kubernetes=kubernetes,
        service_health=service_health,
        webhooks=WebhookDeliverer(webhook_store),
    )


def new_worker(
    client: Client,
    task_queue: str,
    activities: Sequence[object],
    workflows: Sequence[type] = WORKFLOWS,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows),
        activities=list(activities),  # type: ignore[arg-type]
        workflow_runner=sandbox_runner(),
        activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=8),
        # Heartbeats carry build progress (the Dockerfile step) to `rsm register --wait`; the
        # default throttle (80% of the heartbeat timeout) would show a new step every ~24 s.
        max_heartbeat_throttle_interval=timedelta(seconds=2),
        default_heartbeat_throttle_interval=timedelta(seconds=2),
    )


async def connect_client(settings: RsmSettings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


async def run_worker(settings: RsmSettings) -> None:
    # On Supabase the schema is applied with `supabase db push`; locally the worker migrates.
    if not uses_supabase(settings):
        await apply_migrations(settings.database_url)
    store = await store_from_settings(settings)
    client = await connect_client(settings)
    worker = new_worker(client, settings.task_queue, real_activities(store, settings).all())
    log.info("worker on %s polling task queue %s", settings.temporal_address, settings.task_queue)
    try:
        await worker.run()
    except asyncio.CancelledError:
        pass
    finally:
        await store.close()
