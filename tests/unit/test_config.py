"""Configuration decides where Notify runs; mistakes in it must fail loudly, not silently."""

from datetime import date

import numpy as np
import pytest

from include.notify.config import load_config
from include.notify.io.dynamo import bytes_to_vector, to_item, vector_to_bytes


def test_environment_overrides_defaults_with_types() -> None:
    config = load_config({"NOTIFY_DAILY_CAP": "3", "NOTIFY_CHANNELS": "inbox, sns", "NOTIFY_TABLE_PREFIX": "acme_"})
    assert config.daily_cap == 3
    assert config.channels == ("inbox", "sns")
    assert config.table_name("users") == "acme_users"
    assert config.topic("orders") == "notify.orders"


def test_a_misspelt_setting_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="NOTIFY_DAILYCAP"):
        load_config({"NOTIFY_DAILYCAP": "3"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOTIFY_QUIET_START_HOUR": "24"}, "quiet_start_hour"),
        ({"NOTIFY_SPARK_RUNNER": "yarn"}, "spark_runner"),
        ({"NOTIFY_SCHEDULE_SHARDS": "0"}, "schedule_shards"),
        ({"NOTIFY_MAX_LATENESS_MINUTES": "1440"}, "max_lateness_minutes"),
    ],
)
def test_invalid_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(env)


def test_lake_paths_are_partitioned_by_day() -> None:
    config = load_config({"NOTIFY_LAKE_URI": "s3://acme-lake/notify"})
    assert (
        config.lake_path("curated", "users", date(2026, 11, 25)) == "s3://acme-lake/notify/curated/users/dt=2026-11-25"
    )
    with pytest.raises(ValueError, match="unknown lake zone"):
        config.lake_path("gold", "users")


def test_items_drop_absent_values_and_vectors_are_float32_bytes() -> None:
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float64)
    item = to_item({"user_id": "U1", "score": 0.5, "missing": None, "nan": float("nan"), "vector": vector})
    assert set(item) == {"user_id", "score", "vector"}
    assert len(item["vector"]) == 3 * 4
    assert np.array_equal(bytes_to_vector(vector_to_bytes(vector)), vector.astype(np.float32))
