"""One exception hierarchy for the market-data layer: every message names the thing that is wrong."""


class LakeError(Exception):
    """Base class for market-data errors."""


class BarSchemaError(LakeError):
    """Bars do not match the one bar schema (missing column, wrong type, bad timeframe)."""


class SourceError(LakeError):
    """A market-data source failed (HTTP error, malformed file, unknown symbol)."""


class UnknownSymbolError(SourceError):
    """A symbol the source does not know."""


class ValidationFailed(LakeError):
    """Bars failed a blocking validation rule."""
