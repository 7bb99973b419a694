"""The Resources page in a real headless Chromium (Debian's, driven by Playwright; no browser is
downloaded), served by the real API over the session's Postgres and Temporal, with a worker running
the real lifecycle: an approver signs in, clicks Approve, and the page shows the resource go active."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.client import Client

from control.api.app import create_app
from control.api.settings import ApiSettings
from control.client import LifecycleClient
from state.models import ApprovalPolicy, LifecyclePolicy
from state.postgres import PostgresStore
from state.settings import RsmSettings
from tests.conftest import EXAMPLES
from tests.control.api_harness import Tokens, served
from tests.helpers import running_worker, unique_id
from workers.images import PYTHON_MCP_IMAGE
from workers.worker import real_activities

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI = "http://127.0.0.1:8233"

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="apt-get install chromium (scripts/bootstrap.sh)"
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        await b.close()


@pytest.fixture
async def site(
    client: Client, store: PostgresStore, task_queue: str, docker_engine: object
) -> AsyncIterator[tuple[str, Tokens, LifecycleClient]]:
    settings = RsmSettings(task_queue=task_queue, temporal_ui_url_override=UI)
    tokens = Tokens.new()
    lc = LifecycleClient(client, settings)
    worker_settings = settings.model_copy(update={"mcp_base_image": PYTHON_MCP_IMAGE})
    async with running_worker(client, task_queue, real_activities(store, worker_settings).all()):
        app = create_app(
            settings,
            store,
            lc,
            api_settings=ApiSettings(page_refresh_seconds=0.5, command_timeout_seconds=30),
            access=tokens.access(),
        )
        async with served(app) as base:
            yield base, tokens, lc


async def sign_in(page: Page, base: str, token: str, who: str) -> None:
    await page.goto(f"{base}/")
    await page.fill("#token", token)
    await page.click("#use-token")
    await expect(page.get_by_test_id("whoami")).to_have_text(who)


async def test_an_approver_approves_by_clicking_and_sees_the_state_change(
    browser: Browser, site: tuple[str, Tokens, LifecycleClient], tmp_path: Path
) -> None:
    base, tokens, lc = site
    rid = unique_id("t-page")
    await lc.register_mcp(
        EXAMPLES / "mcp/toolbox",
        resource_id=rid,
        owner_team="core",
        actor="olga",
        policy=LifecyclePolicy(approval=ApprovalPolicy(required=True)),
    )

    # An operator sees the resource wait, but gets no Approve button.
    operator = await browser.new_page()
    await sign_in(operator, base, tokens.operator, "signed in as olga (operator)")
    await operator.fill("#search", rid)
    await expect(operator.get_by_test_id(f"state-{rid}")).to_have_text("available", timeout=120_000)
    await expect(operator.get_by_test_id(f"waiting-{rid}")).to_contain_text("approval:approval")
    assert (
        await operator.locator(f'button[data-action="approve"][data-resource-id="{rid}"]').count()
        == 0
    )
    await operator.close()

    page = await browser.new_page()
    await sign_in(page, base, tokens.approver, "signed in as alice (approver)")
    await page.fill("#search", rid)
    badge = page.get_by_test_id(f"state-{rid}")
    await expect(badge).to_have_text("available", timeout=120_000)
    # The overview cards show the database's counts (as the API reports them).
    overview = await page.request.get(f"{base}/api/resources/overview")
    totals = (await overview.json())["totals"]
    for rtype, total in totals.items():
        await expect(page.get_by_test_id(f"total-{rtype}")).to_have_text(str(total))
    link = page.locator(f'tr[data-resource-id="{rid}"] a', has_text="Temporal").first
    assert await link.get_attribute("href") == (
        f"{UI}/namespaces/default/workflows/resource%2Fmcp_server%2F{rid}"
    )

    approve = page.locator(f'#awaiting button[data-action="approve"][data-resource-id="{rid}"]')
    await expect(approve).to_be_visible()
    await approve.click()
    await expect(page.get_by_test_id("notice")).to_contain_text(f"approve {rid}: accepted")
    # The page refreshes itself: no reload, the badge moves to active and the row leaves the inbox.
    await expect(badge).to_have_text("active", timeout=60_000)
    await expect(approve).to_have_count(0)

    # The history timeline shows the approval as alice's.
    await page.locator(f'#resources a[href="#{rid}"]').click()
    timeline = page.get_by_test_id("timeline")
    await expect(timeline.locator("li").first).to_contain_text("alice")
    await expect(timeline.locator('li[data-to-state="active"]')).to_have_count(1)
    await page.screenshot(path=str(tmp_path / "page-after-approve.png"), full_page=True)
    await page.close()
    await lc.command(lc.handle("mcp_server", rid), "archive", actor="test")
