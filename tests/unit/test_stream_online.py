"""The stream's online-row encoding is Feast's, byte for byte, on real feature values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from finstream.config import Settings
from finstream.feature_table import build_features
from finstream.sources.packaged import PackagedSource
from finstream.symbols import parse_symbol
from stream.online import encode_double, encode_timestamp


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    bars = PackagedSource(Settings()).fetch(parse_symbol("ES=F"), None, None, "1m")
    return build_features(bars)


def test_values_are_encoded_as_feast_encodes_them(features: pd.DataFrame) -> None:
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    numeric = features.drop(columns=["symbol", "event_timestamp", "created_timestamp"])
    values = numeric.to_numpy(dtype="float64").ravel().tolist()
    values += [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308]
    assert any(v != v for v in values)
    expected = [p.SerializeToString() for p in python_values_to_proto_values(values, ValueType.DOUBLE)]
    assert [encode_double(v) for v in values] == expected


def test_event_times_are_encoded_as_feast_encodes_them(features: pd.DataFrame) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    odd = pd.Timestamp("2013-09-03 13:51:44.578001", tz="UTC")  # a fraction of a second
    stamps = [*features["event_timestamp"].iloc[:50], odd]
    for stamp in stamps:
        ts = Timestamp()
        ts.FromDatetime(stamp.to_pydatetime())
        assert encode_timestamp(int(stamp.as_unit("ns").value)) == ts.SerializeToString()
    assert np.isnan(features["amount"]).sum() == 0  # ES=F bars from ticks carry the traded amount
