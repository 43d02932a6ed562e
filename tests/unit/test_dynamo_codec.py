"""``Dynamo.serialize`` / ``deserialize`` write and read exactly what boto3's own serializers do
(their fast paths for strings, booleans, integers, lists and maps included)."""

from __future__ import annotations

from decimal import Decimal, DecimalException

import numpy as np
import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from include.notify.io.dynamo import Dynamo, from_dynamo_value, to_item

RECORD = {
    "s": "x", "empty": "", "yes": True, "no": False, "zero": 0, "neg": -5, "big": 10**37, "f": 1.5,
    "np_int": np.int64(4), "np_bool": np.bool_(True), "dec": Decimal("2.50"), "bin": b"ab", "gone": None,
    "nan": float("nan"), "list": [1, "a", [True, None]], "map": {"a": {"b": [Decimal("1.5"), 7]}, "n": None},
    "exp": Decimal("1E+3"), "vec": np.array([0.5, 1.0], dtype=np.float32),
}  # fmt: skip


@pytest.fixture
def codec() -> Dynamo:
    dynamo = Dynamo.__new__(Dynamo)  # no client: the codec only
    dynamo._serializer, dynamo._deserializer = TypeSerializer(), TypeDeserializer()
    return dynamo


def test_serialize_writes_what_boto3s_serializer_writes(codec: Dynamo) -> None:
    assert codec.serialize(RECORD) == {k: TypeSerializer().serialize(v) for k, v in to_item(RECORD).items()}
    assert codec.serialize({"n": 10**38 - 1}) == {"n": {"N": "9" * 38}}
    with pytest.raises(DecimalException):
        codec.serialize({"huge": 10**40})  # past DynamoDB's 38 digits: refused, as boto3 refuses it


def test_deserialize_reads_what_boto3s_deserializer_reads(codec: Dynamo) -> None:
    wire = codec.serialize(RECORD)
    expected = {k: from_dynamo_value(TypeDeserializer().deserialize(v)) for k, v in wire.items()}
    got = codec.deserialize(wire)
    assert got == expected
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}
    assert (got["dec"], got["exp"]) == (2.5, 1000)
    assert type(got["exp"]) is int
