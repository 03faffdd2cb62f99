"""The append-only event ledger and the portfolio replayed from it."""

from trading.ledger.portfolio import Portfolio, replay_portfolio
from trading.ledger.store import Ledger, LedgerError

__all__ = ["Ledger", "LedgerError", "Portfolio", "replay_portfolio"]
