"""Canonical symbols and their per-provider forms."""

from __future__ import annotations

import pytest

from finstream.errors import SymbolError
from finstream.symbols import parse_symbol, parse_symbols


@pytest.mark.parametrize(
    ("text", "canonical", "market", "is_index"),
    [
        ("600036.SH", "600036.SH", "CN", False),
        ("600036.ss", "600036.SH", "CN", False),
        ("sh600036", "600036.SH", "CN", False),
        ("000300.SH", "000300.SH", "CN", True),
        ("000001.SZ", "000001.SZ", "CN", False),
        ("399001.SZ", "399001.SZ", "CN", True),
        ("^GSPC", "^GSPC", "US", True),
        ("aapl", "AAPL", "US", False),
        ("700.HK", "0700.HK", "HK", False),
        ("^HSI", "^HSI", "HK", True),
    ],
)
def test_parse(text: str, canonical: str, market: str, is_index: bool) -> None:
    sym = parse_symbol(text)
    assert (sym.canonical, sym.market, sym.is_index) == (canonical, market, is_index)


def test_provider_forms() -> None:
    cmb = parse_symbol("600036.SH")
    assert cmb.for_provider("akshare") == "600036"
    assert cmb.for_provider("yfinance") == "600036.SS"
    assert cmb.for_provider("tushare") == "600036.SH"
    assert cmb.for_provider("alphavantage") == "600036.SHH"
    assert parse_symbol("000002.SZ").for_provider("yfinance") == "000002.SZ"
    assert parse_symbol("000300.SH").for_provider("akshare") == "sh000300"
    assert parse_symbol("000300.SH").for_provider("yfinance") == "000300.SS"
    assert parse_symbol("^GSPC").for_provider("yfinance") == "^GSPC"
    with pytest.raises(SymbolError, match="index"):
        parse_symbol("^GSPC").for_provider("alphavantage")
    with pytest.raises(SymbolError, match="A-shares only"):
        parse_symbol("AAPL").for_provider("akshare")


def test_limit_classes() -> None:
    assert parse_symbol("600036.SH").limit_class == "CN"
    assert parse_symbol("300059.SZ").limit_class == "CN_GROWTH"
    assert parse_symbol("688981.SH").limit_class == "CN_GROWTH"
    assert parse_symbol("000300.SH").limit_class == "CN_INDEX"
    assert parse_symbol("^GSPC").limit_class == "US"


@pytest.mark.parametrize("bad", ["600036", "60003.SH", "hello world", "", "12345678.HK"])
def test_bad_symbols_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(SymbolError):
        parse_symbols(bad)


def test_parse_symbols_dedupes_in_order() -> None:
    assert [s.canonical for s in parse_symbols("^GSPC, 000300.SH,^gspc")] == ["^GSPC", "000300.SH"]
