"""How the stream labels a champion's promotion, and which interval's models it loads."""

from __future__ import annotations

from finstream.config import Settings
from stream.scoring import interval_settings, promotion_of


def test_the_promotion_is_read_from_the_recorded_reason() -> None:
    assert (
        promotion_of("promote: folds 4 ≥ 3 PASS; ic 0.03 > naive 0 PASS; DM p-value 0.01 ≤ 0.1 PASS")
        == "gates"
    )
    assert promotion_of("manual promotion (gates bypassed): demo") == "manual"
    assert promotion_of("restored by rollback from v3") == "rollback"
    assert promotion_of("no candidate beat the best baseline (QLIKE lower ...): garch") == "baseline"
    assert promotion_of("do not promote: folds 2 < 3 FAIL") == "unknown"
    assert promotion_of(None) == promotion_of("") == "unknown"


def test_each_interval_loads_its_own_models(settings: Settings) -> None:
    hourly = interval_settings(settings, "1h")
    assert hourly.train.interval == "1h" and settings.train.interval == "1d"
    assert hourly.paths.home == settings.paths.home and hourly.train.symbols == settings.train.symbols
    assert interval_settings(settings, "1d") is settings
