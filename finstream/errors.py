"""Exceptions a user can act on; the CLI and API map them to one clear message."""

from __future__ import annotations

from collections.abc import Sequence


class FinstreamError(Exception):
    """Base class for every error finstream raises on purpose."""


class ConfigError(FinstreamError):
    """A setting or parameter is missing or invalid."""


class SymbolError(FinstreamError):
    """A symbol cannot be parsed or is not served by a provider."""


class SchemaError(FinstreamError):
    """A frame does not match the Bar schema (names the column and the problem)."""


class SourceError(FinstreamError):
    """A provider failed to return data (network, API error, empty answer)."""


class SourceUnavailable(SourceError):
    """A provider cannot be used at all here (no credentials, unreachable, symbol not covered)."""


class QualityGateError(SourceError):
    """A provider answered, but the data failed the router's quality gate."""


class NoDataError(FinstreamError):
    """No provider could serve a symbol, or a stage found no input to work on."""


class StoreUnavailable(FinstreamError):
    """The online store (or a feature file a server reads) cannot be read: down, unreachable, not built."""


class UnknownSymbol(FinstreamError):
    """The online store holds no features for these symbols."""

    def __init__(self, symbols: Sequence[str]) -> None:
        super().__init__(
            f"no features for {', '.join(symbols)} in the online store "
            "(unknown symbol, or not materialized: run `finstream materialize`)"
        )
        self.symbols = list(symbols)
