"""User shards: a stable assignment, per-shard lake outputs and the commit that seals a day."""

from __future__ import annotations

import zlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from include.notify.config import NotifyConfig
from include.notify.io import shards
from include.notify.io.lake import read_partition_frame, write_partition_frame

DAY = date(2026, 11, 24)


@pytest.fixture
def config(tmp_path: Path) -> NotifyConfig:
    return NotifyConfig(state_dir=tmp_path, lake_uri=(tmp_path / "lake").as_uri())


def test_a_users_shard_is_crc32_of_its_id_and_shards_are_balanced() -> None:
    ids = [f"U{i:07d}" for i in range(20_000)]
    owners = shards.shard_of(ids, 8)
    assert owners[123] == zlib.crc32(b"U0000123") % 8  # what Spark's pmod(crc32(id), 8) gives
    assert (shards.shard_of(ids, 8) == owners).all()
    sizes = np.bincount(owners, minlength=8)
    assert sizes.min() > 0.9 * len(ids) / 8
    assert sizes.max() < 1.1 * len(ids) / 8
    assert (shards.shard_of(ids, 1) == 0).all()
    assert shards.shards_for(1_000_000, 250_000) == 4
    assert shards.shards_for(1, 250_000) == 1
    # A power of two (a whole set of the schedule's day-index shards): 40 -> 64 at 10 M users.
    assert shards.shards_for(10_000_000, 250_000) == 64
    assert shards.shards_for(750_000, 250_000) == 4


def test_sharded_day_is_read_whole_or_by_shard_and_sealed_only_when_complete(config: NotifyConfig) -> None:
    ids = np.array([f"U{i:03d}" for i in range(60)], dtype=object)
    vectors = np.random.default_rng(1).normal(size=(60, 4)).astype(np.float32)
    owners = shards.shard_of(ids, 3)
    # An earlier unsharded run of the same day must not survive the sharded one.
    write_partition_frame(pd.DataFrame({"user_id": ["STALE"]}), config, "embeddings", "users", DAY, vectors[:1])
    for shard in (0, 1):
        rows = owners == shard
        frame = pd.DataFrame({"user_id": ids[rows]})
        shards.write_shard_frame(frame, config, "embeddings", "users", DAY, shard, 3, vectors[rows])
    with pytest.raises(RuntimeError, match=r"shards \[2\] of 3"):
        shards.commit_shards(config, "embeddings", "users", DAY, 3)
    rows = owners == 2
    shards.write_shard_frame(pd.DataFrame({"user_id": ids[rows]}), config, "embeddings", "users", DAY, 2, 3,
                             vectors[rows])  # fmt: skip
    assert not shards.is_committed(config, "embeddings", "users", DAY)
    marker = shards.commit_shards(config, "embeddings", "users", DAY, 3)
    assert marker == {**marker, "shards": 3, "rows": 60}
    assert shards.is_committed(config, "embeddings", "users", DAY)
    whole, whole_vectors = read_partition_frame(config, "embeddings", "users", DAY)
    assert sorted(whole["user_id"]) == sorted(ids)  # no STALE row
    order = pd.Index(ids).get_indexer(whole["user_id"].astype(str))
    np.testing.assert_array_equal(whole_vectors, vectors[order])
    one, one_vectors = shards.read_shard_frame(config, "embeddings", "users", DAY, 1, 3)
    assert one["user_id"].tolist() == ids[owners == 1].tolist()
    np.testing.assert_array_equal(one_vectors, vectors[owners == 1])
    # Read with another count: the day is read whole and filtered.
    other, other_vectors = shards.read_shard_frame(config, "embeddings", "users", DAY, 0, 2)
    assert set(other["user_id"]) == set(ids[shards.shard_of(ids, 2) == 0])
    assert len(other_vectors) == len(other)


def test_split_inputs_fall_back_to_the_whole_table_filtered(config: NotifyConfig) -> None:
    ids = [f"U{i:03d}" for i in range(30)]
    write_partition_frame(pd.DataFrame({"user_id": ids, "segment": "new"}), config, "features", "user_features", DAY)
    assert shards.shard_count(config.replace(user_shard_size=10), DAY) == 4  # 3, as a power of two
    part = shards.read_user_shard(config, "user_features", DAY, 2, 3)
    assert part["user_id"].tolist() == [u for u, s in zip(ids, shards.shard_of(ids, 3), strict=True) if s == 2]
    with pytest.raises(ValueError, match="not split"):
        shards.read_user_shard(config, "products", DAY, 0, 3)


def test_a_shard_of_a_curated_table_is_the_whole_tables_rows_of_its_users(config: NotifyConfig) -> None:
    from datetime import timedelta

    from include.notify.io.lake import read_current_frame

    ids = [f"U{i:03d}" for i in range(40)]
    older = pd.DataFrame({"user_id": ids, "timezone": "UTC", "opt_out": True})
    write_partition_frame(older, config, "curated", "users", DAY - timedelta(days=2))
    newer = older.iloc[::2].assign(opt_out=False)  # half the users changed: the newest delivery wins
    write_partition_frame(newer.reset_index(drop=True), config, "curated", "users", DAY)
    later = older.assign(timezone="Asia/Tokyo")  # after the day: not current at DAY
    write_partition_frame(later, config, "curated", "users", DAY + timedelta(days=1))
    whole = read_current_frame(config, "users", DAY)
    owners = shards.shard_of(whole["user_id"], 4)
    parts = [shards.read_current_shard(config, "users", DAY, s, 4) for s in range(4)]
    for s, part in enumerate(parts):
        expected = whole[owners == s].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, expected)
    assert sum(len(p) for p in parts) == 40
    assert whole["timezone"].eq("UTC").all()
    rows = shards.read_rows_of_shard(config, "curated", "users", DAY, 1, 4, ["user_id", "opt_out"])
    assert rows.columns.tolist() == ["user_id", "opt_out"]
    assert not rows["opt_out"].any()
    assert set(rows["user_id"]) == {
        u for u, s in zip(newer["user_id"], shards.shard_of(newer["user_id"], 4), strict=True) if s == 1
    }
    with pytest.raises(FileNotFoundError):
        shards.read_rows_of_shard(config, "curated", "clickstream", DAY, 0, 4)
