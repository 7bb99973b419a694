"""The `rsm` console entry point: the control CLI plus the process commands (`dev`, `worker`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

import typer

from control import cli_n8n, cli_ops, cli_team  # noqa: F401  (they register their commands on app)
from control.api.serve import api_command
from control.cli import app
from state.settings import RsmSettings
from workers.devstack import DevStack
from workers.services.process import ServiceError

app.command("api")(api_command)
dev_app = typer.Typer(
    help="Start and stop the local stack (Postgres, Temporal, Docker, worker).",
    no_args_is_help=True,
)
app.add_typer(dev_app, name="dev")


def _guard(action: Callable[[], object]) -> None:
    try:
        action()
    except ServiceError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None


@dev_app.command("up")
def dev_up(
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Also start the worker."),
    n8n: bool = typer.Option(False, "--n8n", help="Also start n8n (or set RSM_N8N=1)."),
    api: bool = typer.Option(True, "--api/--no-api", help="Also serve the HTTP API and page."),
) -> None:
    """Start everything (idempotent: what already runs is reused)."""
    _guard(
        lambda: DevStack(RsmSettings()).up(
            with_worker=worker, say=typer.echo, with_n8n=True if n8n else None, with_api=api
        )
    )


@dev_app.command("down")
def dev_down() -> None:
    """Stop what `dev up` started, by PID."""
    _guard(lambda: DevStack(RsmSettings()).down(say=typer.echo))


@dev_app.command("status")
def dev_status() -> None:
    """Which parts of the stack run."""
    DevStack(RsmSettings()).status(say=typer.echo)


@app.command("worker")
def worker() -> None:
    """Run the lifecycle worker in the foreground (SIGTERM shuts it down gracefully)."""
    from workers.worker import run_worker

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        task = asyncio.create_task(run_worker(RsmSettings()))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await task

    asyncio.run(main())


def main() -> None:
    """Console entry point. Runs the CLI, then leaves without the interpreter's teardown: the
    Temporal SDK's native runtime can abort (SIGABRT) while its threads are torn down at exit
    (temporalio/sdk-python#300), which would turn a clean exit code into -6."""
    code = 0
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            code = 1
        else:
            code = exc.code or 0
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
