"""Analysts' view inside the Airflow UI: a user's planned day and deliveries ("why did X get Y at 09:36?").

An Airflow 3 plugin: a small FastAPI app mounted at ``/notify`` on the API server plus a nav entry
that shows it in the UI. It renders the same text as ``notify plan`` / ``notify deliveries``
(``planning.describe_plan`` and ``dispatch.describe_deliveries``), reading DynamoDB by key only.
Every endpoint requires an authenticated Airflow user; the pages show rendered notifications and
planning reasons, never e-mail addresses or password hashes.
"""

from __future__ import annotations

import html
from datetime import date
from typing import Annotated

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, PlainTextResponse

from include.notify.config import NotifyConfig


def get_config() -> NotifyConfig:
    """Configuration for the request: environment plus the ``aws_default`` connection when readable."""
    from include.notify.config import config_from_airflow

    return config_from_airflow()


def _authenticated() -> list:
    try:
        from airflow.api_fastapi.core_api.security import requires_authenticated
    except ImportError:  # pragma: no cover - older API servers: refuse rather than serve unauthenticated
        raise RuntimeError("this Airflow has no requires_authenticated(); the Notify views need Airflow 3.1+") from None
    return [Depends(requires_authenticated())]


app = FastAPI(title="Notify analyst views", dependencies=_authenticated())
ConfigDep = Annotated[NotifyConfig, Depends(get_config)]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Notify: plans and deliveries</title>
<style>body{{font-family:sans-serif;margin:1.5em}} pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style>
</head><body><h2>Notify: a user's plan and deliveries</h2>
<form method="get" action="">
<label>user_id <input name="user_id" value="{user_id}" required></label>
<label>local day <input name="day" type="date" value="{day}"></label>
<button>show</button></form>{body}</body></html>"""


def _user_id(user_id: str) -> str:
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


@app.get("/plan/{user_id}", response_class=PlainTextResponse)
def plan(user_id: str, config: ConfigDep, day: Annotated[str | None, Query()] = None) -> str:
    """The user's planned local day (latest by default): local and UTC times, status and why."""
    from include.notify.analyst.views import describe_plan
    from include.notify.io.dynamo import Dynamo

    return describe_plan(config, Dynamo.from_config(config), _user_id(user_id), _day(day))


@app.get("/deliveries/{user_id}", response_class=PlainTextResponse)
def deliveries(user_id: str, config: ConfigDep) -> str:
    """The user's recent notifications: sent ones with channel and text, unsent ones with the reason."""
    from include.notify.analyst.views import describe_deliveries
    from include.notify.io.dynamo import Dynamo

    return describe_deliveries(config, Dynamo.from_config(config), _user_id(user_id))


@app.get("/", response_class=HTMLResponse)
def page(config: ConfigDep, user_id: str = "", day: str = "") -> str:
    """A form and, for a user id, both views as preformatted text (escaped)."""
    body = ""
    if user_id:
        sections = [("Plan", plan(user_id, config, day or None)), ("Deliveries", deliveries(user_id, config))]
        body = "".join(f"<h3>{title}</h3><pre>{html.escape(text)}</pre>" for title, text in sections)
    return PAGE.format(user_id=html.escape(user_id), day=html.escape(day), body=body)


class NotifyViewsPlugin(AirflowPlugin):
    """Registers the analyst views with the API server and a nav entry in the UI."""

    name = "notify_views"
    fastapi_apps = [{"app": app, "url_prefix": "/notify", "name": "Notify analyst views"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {"name": "Notify: plans & deliveries", "href": "notify/", "destination": "nav", "url_route": "notify"}
    ]
