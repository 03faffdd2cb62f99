"""The append-only event ledger, the portfolio replayed from it and its one-pass projections."""

from trading.ledger.portfolio import Portfolio, replay_portfolio
from trading.ledger.projections import Projection, SafetyState, project
from trading.ledger.store import Ledger, LedgerError

__all__ = ["Ledger", "LedgerError", "Portfolio", "Projection", "SafetyState", "project", "replay_portfolio"]
