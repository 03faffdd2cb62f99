"""The news lake: headlines per symbol, partitioned by trading day, validated, read point in time.

Sources (offline generator, a user's files, Alpaca's news API) all hand over frames in one schema
(`lake.news.schema`); `lake.news.validation` splits them into clean and quarantined rows with a
reason; `lake.news.store` writes a day atomically and reads as of a decision time.
"""
