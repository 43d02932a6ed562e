"""The response model's lake I/O: the nightly stage (``run_response``: logged decisions and
reactions in, a versioned model out), loading a day's model, and a day's user signals from the
curated lake. What the model is and how it learns lives in ``response`` / ``response_model``.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import pandas as pd

from include.notify.stages.response import UserSignals, fit_for_day, user_signals
from include.notify.stages.response_model import ResponseModel, prior_model

log = logging.getLogger(__name__)


def model_uri(config: Any, day: date) -> str:
    return f"{config.lake_path('models', 'response', day)}/model.pkl"


def save_model(config: Any, day: date, model: ResponseModel) -> str:
    """Write ``models/response/dt=D/model.pkl`` and ``metrics.json``; returns the model's URI."""
    from include.notify.io.lake import write_file, write_json

    uri = write_file(config, "models", "response", day, "model.pkl", model.to_bytes())
    write_json(config, f"{config.lake_path('models', 'response', day)}/metrics.json",
               {"version": model.version, "kind": model.kind, "costs": model.costs.tolist(), **model.metrics})  # fmt: skip
    return uri


def load_model(config: Any, day: date) -> ResponseModel:
    """The model trained for ``day`` (the prior when none was stored)."""
    import fsspec

    try:
        with fsspec.open(model_uri(config, day), "rb") as handle:
            return ResponseModel.from_bytes(handle.read())
    except FileNotFoundError:
        log.info("no response model for %s: the day-1 prior decides", day)
        return prior_model(day)


def run_response(config: Any, day: date, seed: int = 7) -> dict[str, Any]:
    """The nightly response-model stage for ``day``: logs before ``day`` -> model in the lake."""
    import time

    from include.notify.io.lake import read_current_frame, read_parquet

    started = time.monotonic()
    events = _read_all(read_parquet, config, "curated", "clickstream")
    decisions = _read_all(read_parquet, config, "runs", "notify_planning_decisions")
    if decisions is not None and "dt" in decisions:
        decisions = decisions[pd.to_datetime(decisions["dt"].astype(str)).dt.date < day]
    users = read_current_frame(config, "users", day)
    days_logged = int(decisions["local_day"].nunique()) if decisions is not None and len(decisions) else 1
    model = fit_for_day(decisions, events, day, config.interruption_cost, max(config.daily_cap, 1),
                        max(len(users), 1), days_logged, seed)  # fmt: skip
    save_model(config, day, model)
    counts = {"version": model.version, "kind": model.kind, "rows": model.metrics.get("rows", 0),
              "positives": model.metrics.get("positives", 0), "seconds": round(time.monotonic() - started, 2)}  # fmt: skip
    log.info("response model %s: %s", day, counts)
    return counts


def _read_all(reader: Any, config: Any, zone: str, table: str) -> pd.DataFrame | None:
    try:
        return reader(config, zone, table)
    except FileNotFoundError:
        return None


def signals_for_day(config: Any, day: date, users: pd.DataFrame) -> UserSignals:
    """``user_signals`` from the lake's curated purchases, clickstream and products before ``day``."""
    from include.notify.io.lake import read_current_frame, read_parquet

    purchases = _read_all(read_parquet, config, "curated", "purchase_history")
    events = _read_all(read_parquet, config, "curated", "clickstream")
    products = read_current_frame(config, "products", day)
    return user_signals(users, purchases, events, products, day)
