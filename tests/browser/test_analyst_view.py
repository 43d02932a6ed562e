"""The analyst view as a person meets it: a real Airflow API server, its own login page, and
headless Chromium (Debian's package) driven by Playwright.

One API server on a free port (SimpleAuthManager with an Admin and a Viewer), the session's
dynalite holding one demo user's day. Skips only when /usr/bin/chromium is absent; the
screenshots are kept under ``.notify/artifacts/browser/`` (and the test's tmp folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser_support import login, new_context, save_screenshot, simple_auth_env, wait_http

from include.notify.config import NotifyConfig
from notify_tools.localenv import airflow_environment
from notify_tools.services import free_port

pytestmark = pytest.mark.integration

USER = "U0000042"
DAY = datetime.now(UTC).date()


def seed_demo_user(config: NotifyConfig) -> None:
    """One user's day as the nightly runs and dispatch leave it: features, recommendations with
    score components, three planned sends (one sent with its delivery, one pending, one expired)."""
    from include.notify.io.dynamo import Dynamo

    dynamo = Dynamo.from_config(config)
    dynamo.put_items("users", [{"user_id": USER, "name": "Asha Rao", "email": "asha@example.com",
                                "timezone": "Asia/Kolkata", "password_hash": "pbkdf2$secret"}])  # fmt: skip
    engagement = [0.01] * 24
    engagement[9], engagement[13], engagement[19] = 0.2, 0.15, 0.25
    dynamo.put_items("user_features", [{"user_id": USER, "timezone": "Asia/Kolkata", "segment": "active",
                                        "engagement_by_hour": engagement}])  # fmt: skip
    dynamo.put_items("campaigns", [{"campaign_id": c, "name": n, "status": "active"}
                                   for c, n in (("C01", "Monsoon sale"), ("C02", "New sneakers"), ("C03", "Back in stock"))])  # fmt: skip
    long_reason = "peak local hour 09 (engagement 0.200); " + "outside quiet hours, " * 12 + "priority first"
    dynamo.put_items(
        "recommendations",
        [{"user_id": USER, "run_date": str(DAY), "generated_at": f"{DAY}T00:40:00+00:00", "model": "all-MiniLM-L6-v2",
          "model_version": "minilm-384", "opt_out": False, "products": [],
          "campaigns": [{"campaign_id": c, "rank": r, "score": s, "similarity": sim, "priority": p, "response_rate": rr,
                         "reasons": [f"similarity {sim}", f"priority {p}", f"response {rr * 100:.1f}% in segment active"]}
                        for r, (c, s, sim, p, rr) in enumerate([("C01", 0.812, 0.74, 5, 0.061), ("C02", 0.655, 0.61, 3, 0.048),
                                                                ("C03", 0.402, 0.33, 2, 0.05)], start=1)]}],
    )  # fmt: skip
    rows = [
        ("09:12", "03:42", "C01", "sent"),
        ("13:30", "08:00", "C02", "scheduled"),
        ("19:05", "13:35", "C03", "expired"),
    ]
    items = []
    for local, utc, campaign, status in rows:
        send_at = f"{DAY}T{utc}:00Z"
        items.append({"user_id": USER, "send_at_campaign": f"{send_at}#{campaign}", "notification_id": f"{USER}#{DAY}#{campaign}",
                      "campaign_id": campaign, "send_at": send_at, "local_day": str(DAY), "local_time": local,
                      "timezone": "Asia/Kolkata", "priority": 5, "score": 0.812, "reason": long_reason, "status": status,
                      "attempts": 1 if status == "sent" else 0, **({"sent_utc": send_at, "channel": "inbox"} if status == "sent" else {}),
                      **({"failure_reason": "missed: dispatch was down"} if status == "expired" else {})})  # fmt: skip
    dynamo.put_items("notification_schedule", items)
    dynamo.put_items("deliveries", [{"notification_id": f"{USER}#{DAY}#C01", "title": "Monsoon sale",
                                     "short_text": "Asha, 30% off rain jackets today", "channel": "inbox",
                                     "sent_utc": f"{DAY}T03:42:05Z", "sent_epoch": 0}])  # fmt: skip
    dynamo.put_items("clickstream", [{"user_id": USER, "ts_event_id": f"{DAY}T04:00:00Z#e1", "event_type": "notification_click",
                                      "campaign_id": "C01", "notification_id": f"{USER}#{DAY}#C01"}])  # fmt: skip


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory, dynalite) -> Iterator[tuple[str, NotifyConfig]]:
    """An Airflow API server (UI, login, the Notify plugin) on a free loopback port."""
    from include.notify.config import load_config
    from include.notify.io.dynamo import Dynamo

    home = tmp_path_factory.mktemp("airflow-ui")
    config = load_config({}).replace(
        state_dir=home / "state", lake_uri=(home / "lake").as_uri(), table_prefix="browser_",
        dynamodb_endpoint_url=dynalite.endpoint,
    )  # fmt: skip
    Dynamo.from_config(config).create_tables()
    seed_demo_user(config)
    port = free_port()
    env = {
        **os.environ,
        **airflow_environment(config),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        **simple_auth_env(home, port),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "no-dags"),
    }
    bin_dir = Path(sys.executable).parent
    log = home / "api-server.log"
    with log.open("w") as out:
        subprocess.run(
            [str(bin_dir / "airflow"), "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT, check=True
        )
        process = subprocess.Popen(
            [str(bin_dir / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/api/v2/monitor/health", process, log)
        yield base, config
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_an_admin_logs_in_and_reads_a_users_plan_deliveries_and_scores(airflow_ui, browser, tmp_path: Path) -> None:
    base, _ = airflow_ui
    context = new_context(browser, base)
    page = context.new_page()
    login(page, base, "admin", f"/notify/user/{USER}")
    assert page.url.startswith(f"{base}/notify/user/{USER}"), page.url

    timeline = page.locator("#timeline svg")
    assert timeline.is_visible()
    assert timeline.locator("rect.quiet").count() == 10  # 22:00-08:00 shaded
    assert timeline.locator("g.slot").count() == 3
    assert "09:12 C01" in timeline.text_content()
    deliveries = page.locator("#deliveries")
    assert deliveries.is_visible()
    assert "Asha, 30% off rain jackets today" in deliveries.inner_text()
    assert "inbox" in deliveries.inner_text()
    assert "missed: dispatch was down" in deliveries.inner_text()
    campaigns = page.locator("#campaigns")
    assert campaigns.is_visible()
    first = campaigns.locator("tbody tr").first.inner_text()
    assert "Monsoon sale" in first
    assert "0.812" in first
    assert "0.740" in first
    assert "6.1%" in first
    assert "asha@example.com" not in page.content()
    assert "pbkdf2" not in page.content()
    # The long "why" stays inside the page: nothing wider than the viewport.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shot = save_screenshot(page, tmp_path, "notify-user-page.png")

    # Inside the Airflow UI: the nav entry's page frames the view.
    page.goto(f"{base}/plugin/notify")
    frame = page.frame_locator("iframe")
    frame.locator("#fleet svg").first.wait_for(timeout=30_000)
    assert "Fleet overview" in frame.locator("body").inner_text()
    save_screenshot(page, tmp_path, "notify-in-airflow-ui.png")
    assert context.outside == [], f"requests left the machine: {context.outside}"
    assert shot.stat().st_size > 10_000
    context.close()


def test_a_viewer_is_refused_user_data(airflow_ui, browser) -> None:
    base, _ = airflow_ui
    context = new_context(browser, base)
    page = context.new_page()
    login(page, base, "viewer", f"/notify/user/{USER}")
    assert "may read" in page.locator("body").inner_text()
    assert "rain jackets" not in page.content()
    assert "Monsoon sale" not in page.content()
    response = page.request.get(f"{base}/notify/api/user/{USER}")
    assert response.status == 403
    assert "Monsoon" not in response.text()
    # Aggregates only on the landing page: a Viewer may see the fleet.
    page.goto(f"{base}/notify/")
    assert page.locator("#fleet svg").count() == 3
    context.close()


def test_without_a_session_nothing_is_served(airflow_ui) -> None:
    base, _ = airflow_ui

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)

    def status(path: str, **headers: str) -> tuple[int, str, str]:
        request = urllib.request.Request(f"{base}{path}", headers=headers)
        try:
            with opener.open(request, timeout=10) as answer:
                return answer.status, answer.headers.get("location", ""), answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("location", ""), error.read().decode()

    code, location, _ = status(f"/notify/user/{USER}")
    assert code in (302, 303, 307)
    assert "/auth/login" in location
    assert "next=" in location
    code, location, _ = status("/notify/")
    assert code in (302, 303, 307)
    assert "/auth/login" in location
    code, _, body = status(f"/notify/api/user/{USER}")
    assert code == 401
    assert "Monsoon" not in body
    code, location, _ = status(f"/notify/user/{USER}", Cookie="_token=forged.jwt.value")
    assert code in (302, 303, 307)
    assert "/auth/login" in location
    for path in ("/notify/docs", "/notify/openapi.json", "/notify/redoc"):
        code, _, body = status(path)
        assert code != 200, path
        assert "openapi" not in body.lower(), path
