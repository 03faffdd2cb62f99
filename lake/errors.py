"""One exception hierarchy for the market-data layer: every message names the thing that is wrong."""


class LakeError(Exception):
    """Base class for market-data errors."""


class BarSchemaError(LakeError):
    """Bars do not match the one bar schema (missing column, wrong type, bad timeframe)."""


class SourceError(LakeError):
    """A market-data source failed (HTTP error, malformed file, unknown symbol).

    Bad input by default: asking again gets the same answer, so callers do not retry it."""


class TransientSourceError(SourceError):
    """A failure that asking again may cure (a timeout, a dropped connection, HTTP 429 or 5xx)."""


class UnknownSymbolError(SourceError):
    """A symbol the source does not know."""


class ValidationFailed(LakeError):
    """Bars failed a blocking validation rule."""
