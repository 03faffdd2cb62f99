"""Brokers behind one interface: the seeded simulated broker and Alpaca (paper by default)."""
