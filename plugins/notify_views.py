"""Analysts' view inside the Airflow UI: why did user X get campaign Y at 09:36?

An Airflow 3 plugin: a FastAPI app mounted at ``/notify`` on the API server and a nav entry that
shows it inside the UI. Pages:

- ``/notify/`` — a user search and the fleet overview (sends per hour, statuses, clicks and CTR
  by day): aggregates only, for any signed-in Airflow user.
- ``/notify/user/{user_id}`` — the user's day plan as a timeline (local hours, quiet hours
  shaded), deliveries with status and channel, top campaigns with score components.
  ``/notify/api/user/{user_id}`` is the same as JSON. Both carry personal data and need an
  analyst role: ``[notify] analyst_roles`` (``AIRFLOW__NOTIFY__ANALYST_ROLES``, default
  ``ADMIN``). Under auth managers without a single role per user (FAB), the user needs the
  custom view ``Notify user data`` instead.

Identity is Airflow's own: the UI's JWT (the ``_token`` cookie, or an ``Authorization: Bearer``
header), checked by the API server's ``get_user``. A browser without a valid session is sent to
the auth manager's login page and back; API clients get 401. No docs or OpenAPI schema are
served, and every chart is inline SVG: the page loads nothing from the internet. E-mail
addresses and password hashes are never shown.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import date
from html import escape
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from include.notify.config import NotifyConfig

USER_DATA_VIEW = "Notify user data"
DEFAULT_ANALYST_ROLES = "ADMIN"
FLEET_CACHE_SECONDS = 60.0


class NotAllowedError(Exception):
    """The signed-in user lacks the analyst role."""

    def __init__(self, user_name: str, role: str, allowed: str) -> None:
        super().__init__(f"{user_name} ({role}) may not read Notify user data; allowed roles: {allowed}")
        self.user_name, self.role, self.allowed = user_name, role, allowed


def get_config() -> NotifyConfig:
    """Configuration for the request: environment plus the ``aws_default`` connection when readable."""
    from include.notify.config import config_from_airflow

    return config_from_airflow()


def _get_user_dependency() -> Any:
    try:
        from airflow.api_fastapi.core_api.security import get_user
    except ImportError:  # pragma: no cover - refuse to serve rather than serve unauthenticated
        raise RuntimeError("this Airflow has no api_fastapi get_user(); the Notify views need Airflow 3.1+") from None
    return get_user


CurrentUser = Annotated[Any, Depends(_get_user_dependency())]
ConfigDep = Annotated[NotifyConfig, Depends(get_config)]

app = FastAPI(title="Notify analyst view", docs_url=None, redoc_url=None, openapi_url=None)


def analyst_roles() -> set[str]:
    """Role names allowed to read user data, upper-cased, from ``[notify] analyst_roles``."""
    from airflow.configuration import conf

    raw = conf.get("notify", "analyst_roles", fallback=DEFAULT_ANALYST_ROLES) or DEFAULT_ANALYST_ROLES
    return {role.strip().upper() for role in raw.split(",") if role.strip()}


def may_read_user_data(user: Any) -> bool:
    """Whether this Airflow user may read a person's plan and messages (see the module docstring)."""
    allowed = analyst_roles()
    role = getattr(user, "role", None)
    if role is not None:  # SimpleAuthManager: one role per user
        return str(role).upper() in allowed
    roles = getattr(user, "roles", None)
    if roles and {str(getattr(r, "name", r)).upper() for r in roles} & allowed:  # FAB: role objects
        return True
    from airflow.api_fastapi.app import get_auth_manager

    return bool(get_auth_manager().is_authorized_custom_view(method="GET", resource_name=USER_DATA_VIEW, user=user))


def require_analyst(user: CurrentUser) -> Any:
    """The signed-in user, when allowed to read user data; raises ``NotAllowedError`` otherwise."""
    if not may_read_user_data(user):
        raise NotAllowedError(user.get_name(), str(getattr(user, "role", "?")), ", ".join(sorted(analyst_roles())))
    return user


AnalystUser = Annotated[Any, Depends(require_analyst)]


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "/api/" not in request.url.path


@app.exception_handler(HTTPException)
async def _auth_errors(request: Request, error: HTTPException) -> Response:
    # 401 (no or expired token) and 403 "Invalid JWT token" both mean: no valid session.
    if error.status_code in (401, 403) and _wants_html(request):
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        return RedirectResponse(login, status_code=303)
    if _wants_html(request):
        return HTMLResponse(_page("Notify", f"<p class='error'>{escape(str(error.detail))}</p>"), error.status_code)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


@app.exception_handler(NotAllowedError)
async def _not_allowed(request: Request, error: NotAllowedError) -> Response:
    if not _wants_html(request):
        return JSONResponse({"detail": str(error)}, status_code=403)
    body = (
        f"<p class='error'>Signed in as <b>{escape(error.user_name)}</b> (role {escape(error.role)}): "
        f"this page shows a person's messages, which only the roles {escape(error.allowed)} may read. "
        "Ask an Airflow admin for one of them.</p>"
    )
    return HTMLResponse(_page("Notify: not allowed", body), status_code=403)


# ----------------------------------------------------------------------------------- helpers
def _user_id(user_id: str) -> str:
    user_id = user_id.strip()
    if not user_id or len(user_id) > 64:
        raise HTTPException(status_code=400, detail="user_id must be 1-64 characters")
    return user_id


def _day(day: str | None) -> date | None:
    if not day:
        return None
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise HTTPException(status_code=400, detail=f"day must be YYYY-MM-DD, got {day!r}") from None


def _dynamo(config: NotifyConfig) -> Any:
    from include.notify.io.dynamo import Dynamo

    return Dynamo.from_config(config)


def _load_user(config: NotifyConfig, user_id: str, day: str | None) -> Any:
    from include.notify.analyst.user_page import user_page

    page = user_page(config, _dynamo(config), _user_id(user_id), _day(day))
    if not page.known:
        raise HTTPException(
            status_code=404,
            detail=f"no user {user_id!r} in {config.table_name('users')} and nothing planned for them",
        )
    return page


_fleet_cache: dict[str, tuple[float, Any]] = {}


def _fleet(config: NotifyConfig) -> Any:
    # A projected scan of two tables: cached per table prefix so reloading the page costs nothing.
    from include.notify.analyst.user_page import fleet_overview

    cached = _fleet_cache.get(config.table_prefix)
    if cached and time.monotonic() - cached[0] < FLEET_CACHE_SECONDS:
        return cached[1]
    overview = fleet_overview(config, _dynamo(config))
    _fleet_cache[config.table_prefix] = (time.monotonic(), overview)
    return overview


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.2em;color:#263238}
h2{margin:.2em 0 .6em} h3{margin:1.2em 0 .4em}
table{border-collapse:collapse;width:100%;table-layout:fixed;font-size:13px}
th,td{border-bottom:1px solid #e0e0e0;padding:4px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f5f5f5} .num{text-align:right;font-variant-numeric:tabular-nums}
.why{width:38%} .msg{width:34%} .error{color:#b71c1c} .muted{color:#607d8b}
.status{font-weight:600} .status-sent{color:#2e7d32} .status-failed{color:#c62828} .status-expired{color:#757575}
.grid{display:flex;flex-wrap:wrap;gap:1em} .card{flex:1 1 440px;min-width:320px}
form{margin-bottom:1em} input{padding:3px}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _search_form(base: str, user_id: str = "", day: str = "") -> str:
    return (
        f'<form method="get" action="{base}"><label>user id <input name="user_id" value="{escape(user_id)}" required></label> '
        f'<label>local day <input name="day" type="date" value="{escape(day)}"></label> <button>show</button></form>'
    )


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "" if value is None else pattern.format(value)


# Each table's columns: (header, class of the header cell).
PLAN_COLUMNS = (("local", ""), ("UTC", ""), ("campaign", ""), ("status", ""), ("prio", "num"), ("score", "num"),
                ("why", "why"))  # fmt: skip
DELIVERY_COLUMNS = (("planned (UTC)", ""), ("status", ""), ("sent (UTC)", ""), ("channel", ""), ("tries", "num"),
                    ("message", "msg"))  # fmt: skip
CAMPAIGN_COLUMNS = (("#", "num"), ("campaign", ""), ("score", "num"), ("similarity", "num"), ("priority", "num"),
                    ("response rate", "num"), ("p(click)", "num"), ("why", "why"))  # fmt: skip


def _cell(tag: str, html: str, css: str) -> str:
    return f"<{tag} class='{css}'>{html}</{tag}>" if css else f"<{tag}>{html}</{tag}>"


def _table(
    table_id: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[tuple[str, str]]],
    empty: str | None = "none",
) -> str:
    """An HTML table of already-escaped cells ``(html, class)``; with no rows, one ``empty`` row
    spanning every column (none at all when ``empty`` is None)."""
    head = "".join(_cell("th", title, css) for title, css in columns)
    body = "".join("<tr>" + "".join(_cell("td", html, css) for html, css in row) + "</tr>" for row in rows)
    if not body and empty is not None:
        body = f"<tr><td colspan={len(columns)}>{empty}</td></tr>"
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _user_html(page: Any, base: str) -> str:
    from include.notify.analyst.charts import plan_timeline

    head = (
        f"<h2>Notify · user {escape(page.user_id)}</h2>{_search_form(base, page.user_id)}"
        f"<p class='muted'>segment {escape(page.segment or '-')} · time zone {escape(page.timezone)}"
        f" · recommendations of {escape(page.recommendations_run_date or '-')} (model {escape(page.model_version or '-')})</p>"
    )
    parts = [head, "<h3>Day plan</h3>"]
    plan = page.plan
    if plan is None:
        parts.append("<p>Nothing planned for this user yet.</p>")
    else:
        others = ", ".join(
            f'<a href="{base}user/{escape(page.user_id)}?day={escape(d)}">{escape(d)}</a>' for d in plan.planned_days
        )
        parts.append(
            f"<p class='muted'>quiet hours {plan.quiet_start_hour:02d}:00-{plan.quiet_end_hour:02d}:00 local (shaded) ·"
            f" planned days: {others}</p><div id='timeline'>{plan_timeline(plan)}</div>"
        )
        slots = [
            [(escape(s.local_time), ""), (escape(s.send_at_utc), ""),
             (f"{escape(s.campaign_id)} {escape(s.campaign_name)}", ""), (escape(s.status), f"status status-{escape(s.status)}"),
             ("" if s.priority is None else str(s.priority), "num"), (_fmt(s.score), "num"),
             (escape(s.reason) + (f" ({escape(s.failure_reason)})" if s.failure_reason else ""), "")]
            for s in plan.slots
        ]  # fmt: skip
        parts.append(_table("plan", PLAN_COLUMNS, slots, empty=None))
    parts.append("<h3>Deliveries</h3>")
    deliveries = [
        [(escape(d.planned_utc), ""), (escape(d.status), f"status status-{escape(d.status)}"), (escape(d.sent_utc), ""),
         (escape(d.channel), ""), (str(d.attempts), "num"),
         (f"[{escape(d.campaign_id)}] {escape(d.title + ': ' + d.text if d.title else d.reason)}", "")]
        for d in page.deliveries
    ]  # fmt: skip
    parts.append(_table("deliveries", DELIVERY_COLUMNS, deliveries))
    parts.append("<h3>Top campaigns and score components</h3>")
    campaigns = [
        [(str(c.rank), "num"), (f"{escape(c.campaign_id)} {escape(c.name)}", ""), (f"{c.score:.3f}", "num"),
         (f"{c.similarity:.3f}", "num"), (str(c.priority), "num"), (f"{c.response_rate:.1%}", "num"),
         (_fmt(c.predicted_click, "{:.1%}") or "-", "num"), (escape("; ".join(c.reasons)), "")]
        for c in page.campaigns
    ]  # fmt: skip
    parts.append(_table("campaigns", CAMPAIGN_COLUMNS, campaigns))
    return _page(f"Notify: {page.user_id}", "".join(parts))


def _base(request: Request) -> str:
    # Links relative to the mount point, so the view works under any Airflow base URL.
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{root}/"


# ------------------------------------------------------------------------------------ routes
@app.get("/", response_class=HTMLResponse)
def index(request: Request, user: CurrentUser, config: ConfigDep, user_id: str = "", day: str = "") -> Response:
    """The search form and the fleet overview; a submitted user id goes to that user's page."""
    from include.notify.analyst.charts import bar_chart, clicks_ctr_chart, statuses_chart

    base = _base(request)
    if user_id:
        query = f"?{urlencode({'day': day})}" if day else ""
        return RedirectResponse(f"{base}user/{quote(_user_id(user_id), safe='')}{query}", status_code=303)
    fleet = _fleet(config)
    hours = [f"{h:02d}" for h in range(24)]
    per_hour_title = f"sends per UTC hour on {fleet.sends_day or '-'}"
    body = (
        f"<h2>Notify: plans, deliveries and why</h2>{_search_form(base)}"
        f"<h3>Fleet overview</h3><div class='grid' id='fleet'>"
        f"<div class='card'>{bar_chart(hours, fleet.sends_per_hour, per_hour_title)}</div>"
        f"<div class='card'>{statuses_chart(fleet.statuses)}</div>"
        f"<div class='card'>{clicks_ctr_chart(fleet.by_day)}</div></div>"
        f"<p class='muted'>Signed in as {escape(user.get_name())}. Refreshed at most every {FLEET_CACHE_SECONDS:.0f} s.</p>"
    )
    return HTMLResponse(_page("Notify", body))


@app.get("/user/{user_id}", response_class=HTMLResponse)
def user_html(request: Request, user_id: str, user: AnalystUser, config: ConfigDep, day: str = "") -> str:
    """The user's page (analyst role): plan timeline, deliveries, top campaigns."""
    return _user_html(_load_user(config, user_id, day or None), _base(request))


@app.get("/api/user/{user_id}")
def user_json(user_id: str, user: AnalystUser, config: ConfigDep, day: str = "") -> dict[str, Any]:
    """The same data as JSON (analyst role)."""
    return dataclasses.asdict(_load_user(config, user_id, day or None))


class NotifyViewsPlugin(AirflowPlugin):
    """Registers the analyst view with the API server and a nav entry in the UI."""

    name = "notify_views"
    fastapi_apps = [{"app": app, "url_prefix": "/notify", "name": "Notify analyst view"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {"name": "Notify: users & fleet", "href": "/notify/", "destination": "nav", "url_route": "notify"}
    ]
