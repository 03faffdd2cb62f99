"""Seeded offline headlines tied to the synthetic prices (lake.sources.synthetic), for the demo.

Per (seed, symbol, session day) a fixed number of headlines at fixed times, from their own random
stream: a pre-market note, one to three during the session, a recap after the close. A headline's
tone follows the return it can know at its creation time, never a later one: before the open the
previous session's close-to-close move, during the session the last finished minute's close against
the previous close, after the close the day's close-to-close move. So the news never knows the
future, and how many headlines a day has does not depend on its prices either. Same seed, same
bytes, whatever range was asked and whatever today's date is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from lake.calendar import EXCHANGE_TZ, session_bounds, trading_days
from lake.errors import SourceError
from lake.news.schema import SORT_KEY, conform_news, empty_news
from lake.sources.synthetic import SyntheticSource, session_prices

TYPICAL_MOVE = 0.015  # a day's move that reads as clearly good or bad news
NEUTRAL_BAND = 0.35  # |tone| below this is a neutral headline
UPDATE_SHARE = 0.15  # headlines corrected after publication (updated_at later than created_at)

# Words a lexicon reader can score: every positive template has one of POSITIVE_WORDS, every negative one of NEGATIVE_WORDS.
POSITIVE_WORDS = ("surges", "rallies", "gains", "beats", "upgrade", "climbs")
NEGATIVE_WORDS = ("slides", "plunges", "falls", "misses", "downgrade", "drops")
_TEMPLATES = {
    1: (
        "{s} surges {p} as buyers pile in",
        "{s} rallies {p}; analysts see room to run",
        "{s} gains {p} after upbeat channel checks",
        "{s} climbs {p} as demand outlook improves",
        "Broker issues upgrade on {s} after {p} move",
    ),
    -1: (
        "{s} slides {p} as sellers take control",
        "{s} plunges {p} on margin worries",
        "{s} falls {p} after cautious guidance chatter",
        "{s} drops {p} as demand outlook dims",
        "Broker issues downgrade on {s} after {p} move",
    ),
    0: (
        "{s} little changed ({p}) ahead of sector data",
        "{s} trades flat ({p}) as investors wait for catalysts",
        "{s} steady ({p}); options market prices a quiet week",
    ),
}
_SLOTS = ("premarket", "session", "session", "session", "after_close")


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def _tone(ret: float, noise: float) -> int:
    """+1, -1 or 0: the move scaled by a typical day's, blurred a little near the band's edge;
    a headline never calls a rise a fall."""
    score = ret / TYPICAL_MOVE + noise
    tone = 1 if score > NEUTRAL_BAND else -1 if score < -NEUTRAL_BAND else 0
    return tone if tone * ret > 0 else 0


class SyntheticNewsSource:
    """The offline default: any ticker the bar generator knows gets headlines on every session."""

    name = "synthetic"

    def __init__(self, seed: int = 7, exchange: str = "XNYS") -> None:
        self.seed = seed
        self.exchange = exchange
        self._bars = SyntheticSource(seed=seed, exchange=exchange)

    def fetch_news(self, symbols: Sequence[str], start: datetime, end: datetime) -> pl.DataFrame:
        if start.tzinfo is None or end.tzinfo is None:
            raise SourceError("synthetic news: start and end must be timezone-aware")
        if start >= end:
            return empty_news()
        local = ZoneInfo(EXCHANGE_TZ)
        days = trading_days(start.astimezone(local).date(), end.astimezone(local).date(), self.exchange)
        rows = [row for day in days for symbol in symbols for row in self.day(symbol, day)]
        if not rows:
            return empty_news()
        news = conform_news(pl.DataFrame(rows), where="synthetic news")
        return news.filter((pl.col("created_at") >= start) & (pl.col("created_at") < end)).sort(list(SORT_KEY))

    def day(self, symbol: str, day: date) -> list[dict[str, object]]:
        """The headlines of one symbol on one session day (deterministic for seed, symbol, day)."""
        previous, _, close = session_prices(self.seed, symbol, day, self.exchange)
        if previous is None:
            return []  # the calendar's first session: nothing to compare with
        opened, closed = session_bounds(day, self.exchange)
        rng = np.random.default_rng(_stable_int("news", self.seed, symbol, day.isoformat(), self.exchange))
        wanted = [rng.random() < 0.6, True, rng.random() < 0.6, rng.random() < 0.3, True]
        minutes: pl.DataFrame | None = None
        rows: list[dict[str, object]] = []
        local = ZoneInfo(EXCHANGE_TZ)
        local_day = datetime.combine(day, time(), tzinfo=local)
        for k, (slot, on) in enumerate(zip(_SLOTS, wanted, strict=True)):
            # Every slot draws its numbers whether or not it is used, so slot k's draws never depend on another's.
            at_draw, noise, pick, edit_draw, edit_minutes = rng.random(), rng.normal(0.0, 0.15), rng.integers(0, 1 << 30), rng.random(), rng.uniform(5, 180)
            if not on:
                continue
            if slot == "premarket":
                created = local_day + timedelta(hours=7) + timedelta(minutes=int(at_draw * 140))
                before = _previous_session(day, self.exchange)
                prev_prev = session_prices(self.seed, symbol, before, self.exchange)[0] if before else None
                ref, base, what = previous, prev_prev or previous, "previous close"
            elif slot == "after_close":
                created = closed.astimezone(local) + timedelta(minutes=5 + int(at_draw * 200))
                ref, base, what = close, previous, "close"
            else:
                if minutes is None:
                    minutes = self._bars.fetch([symbol], "1m", opened, closed)
                j = int(at_draw * (minutes.height - 1))
                created = (opened + timedelta(minutes=j + 1)).astimezone(local)
                ref = float(minutes["close"][j])  # the last minute finished by then
                base, what = previous, "last trade"
            ret = ref / base - 1.0
            tone = _tone(ret, noise)
            templates = _TEMPLATES[tone]
            pct = f"{ret * 100:+.1f}%"
            created_utc = created.astimezone(UTC)
            updated = created_utc + timedelta(minutes=int(edit_minutes)) if edit_draw < UPDATE_SHARE else created_utc
            rows.append(
                {
                    "id": f"syn-{self.seed}-{symbol}-{day:%Y%m%d}-{k}",
                    "symbol": symbol,
                    "created_at": created_utc,
                    "updated_at": updated,
                    "headline": templates[int(pick) % len(templates)].format(s=symbol, p=pct),
                    "summary": f"{symbol} {what} {ref:.2f} against {base:.2f} the session before ({pct}).",
                    "source": "synthetic",
                    "url": f"synthetic://{self.seed}/{symbol}/{day.isoformat()}/{k}",
                }
            )
        return rows


def _previous_session(day: date, exchange: str) -> date | None:
    days = trading_days(day - timedelta(days=10), day - timedelta(days=1), exchange)
    return days[-1] if days else None
