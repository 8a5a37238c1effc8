"""Canonical symbols (`600036.SH`, `000300.SH`, `^GSPC`, `0700.HK`, `AAPL`) and their per-provider forms."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

from finstream.errors import SymbolError
from finstream.markets import MARKETS, Market, MarketName

_CN = re.compile(r"^(\d{6})\.(SH|SZ|BJ)$")
_HK = re.compile(r"^(\d{1,5})\.HK$")
_US = re.compile(r"^\^?[A-Z][A-Z0-9.\-]{0,9}$")

_HK_INDICES = {"^HSI"}
#: spot FX pairs: two ISO currency codes, written EURUSD, EUR/USD or Yahoo's EURUSD=X
_FX = re.compile(r"^([A-Z]{3})/?([A-Z]{3})(?:=X)?$")
CURRENCIES = {
    "USD",
    "EUR",
    "JPY",
    "GBP",
    "CHF",
    "CNY",
    "CNH",
    "HKD",
    "AUD",
    "NZD",
    "CAD",
    "SEK",
    "NOK",
    "SGD",
}
#: futures, continuous front month in Yahoo's form: ES=F (E-mini S&P 500), NQ=F, ...
_FUTURE = re.compile(r"^([A-Z]{1,3})=F$")


@dataclass(frozen=True)
class Symbol:
    """A parsed canonical symbol."""

    canonical: str
    market: MarketName
    code: str
    exchange: str
    is_index: bool

    @property
    def exchange_market(self) -> Market:
        """The market's clock: zone, daily close, sessions."""
        return MARKETS[self.market]

    @property
    def tz(self) -> str:
        return MARKETS[self.market].tz

    @property
    def close_time(self) -> time:
        return MARKETS[self.market].close

    @property
    def limit_class(self) -> str:
        """Which daily move limit applies (see ValidateParams.move_limits)."""
        if self.market != "CN":
            return self.market
        if self.is_index:
            return "CN_INDEX"
        if self.code.startswith(("300", "301", "688", "689")) or self.exchange == "BJ":
            return "CN_GROWTH"
        return "CN"

    def for_provider(self, provider: str) -> str:
        """The form a provider's API expects; SymbolError if that provider does not cover it."""
        if self.market in ("FX", "CME") and provider in ("akshare", "tushare", "alphavantage"):
            raise SymbolError(
                f"the {provider} provider does not serve {self.market} symbols ({self.canonical})"
            )
        if provider == "yfinance" and self.market == "FX":
            return f"{self.canonical}=X"
        if provider == "akshare":
            if self.market != "CN":
                raise SymbolError(f"akshare provider serves China A-shares only, not {self.canonical}")
            return self.code if not self.is_index else f"{self.exchange.lower()}{self.code}"
        if provider == "yfinance":
            if self.market == "CN":
                if self.exchange == "BJ":
                    raise SymbolError(f"yfinance does not list Beijing exchange symbols ({self.canonical})")
                return f"{self.code}.{'SS' if self.exchange == 'SH' else 'SZ'}"
            return self.canonical
        if provider == "alphavantage":
            if self.is_index:
                raise SymbolError(f"Alpha Vantage has no daily series for index {self.canonical}")
            if self.market == "CN":
                if self.exchange == "BJ":
                    raise SymbolError(f"Alpha Vantage does not cover {self.canonical}")
                return f"{self.code}.{'SHH' if self.exchange == 'SH' else 'SHZ'}"
            if self.market == "HK":
                raise SymbolError(f"Alpha Vantage does not cover Hong Kong symbols ({self.canonical})")
            return self.canonical
        if provider == "tushare":
            if self.market != "CN":
                raise SymbolError(f"Tushare provider serves China A-shares only, not {self.canonical}")
            return self.canonical
        return self.canonical

    def __str__(self) -> str:
        return self.canonical


def _cn_is_index(code: str, exchange: str) -> bool:
    """SSE index codes start with 000 (000001 SSE Composite, 000300 CSI 300); SZSE indices with 399."""
    return (exchange == "SH" and code.startswith("000")) or (exchange == "SZ" and code.startswith("399"))


def parse_symbol(text: str) -> Symbol:
    """Parse a canonical symbol, accepting common aliases (`600036.SS`, `sh600036`, `SH600036`)."""
    raw = text.strip()
    s = raw.upper()
    alias = re.match(r"^(SH|SZ|BJ)(\d{6})$", s)
    if alias:
        s = f"{alias.group(2)}.{alias.group(1)}"
    if s.endswith(".SS"):
        s = s[:-3] + ".SH"
    m = _CN.match(s)
    if m:
        code, ex = m.group(1), m.group(2)
        return Symbol(s, "CN", code, ex, _cn_is_index(code, ex))
    m = _HK.match(s)
    if m:
        code = m.group(1).lstrip("0").zfill(4)
        return Symbol(f"{code}.HK", "HK", code, "HK", False)
    if re.fullmatch(r"\d{6}", s):
        raise SymbolError(f"symbol {raw!r} needs an exchange suffix, e.g. {s}.SH or {s}.SZ")
    if s in _HK_INDICES:
        return Symbol(s, "HK", s.lstrip("^"), "HK", True)
    m = _FX.match(s)
    if m and m.group(1) in CURRENCIES and m.group(2) in CURRENCIES:
        pair = m.group(1) + m.group(2)
        return Symbol(pair, "FX", pair, "FX", False)
    m = _FUTURE.match(s)
    if m:
        return Symbol(s, "CME", m.group(1), "CME", False)
    if _US.match(s):
        return Symbol(s, "US", s.lstrip("^"), "US", s.startswith("^"))
    raise SymbolError(
        f"cannot parse symbol {raw!r}: expected forms like 600036.SH, 000001.SZ, 0700.HK, AAPL, ^GSPC, "
        "EURUSD or ES=F"
    )


def infer_cn_symbol(code: str) -> Symbol:
    """Canonical A-share *stock* symbol for a bare 6-digit code (6→SH, 0/2/3→SZ, 4/8/9→BJ)."""
    code = code.strip().zfill(6)
    if not re.fullmatch(r"\d{6}", code):
        raise SymbolError(f"{code!r} is not a 6-digit A-share code")
    exchange = "SH" if code[0] == "6" else "SZ" if code[0] in "023" else "BJ"
    return Symbol(f"{code}.{exchange}", "CN", code, exchange, False)


def parse_symbols(text: str | list[str]) -> list[Symbol]:
    """Parse a comma-separated list (or a list) of symbols, dropping duplicates, keeping order."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: dict[str, Symbol] = {}
    for item in items:
        if item.strip():
            sym = parse_symbol(item)
            out.setdefault(sym.canonical, sym)
    if not out:
        raise SymbolError("no symbols given")
    return list(out.values())
