"""Alerts: a structured log line always, and a JSON POST to a webhook when one is configured.

QUANTLAKE_ALERT_WEBHOOK: the URL (Slack-compatible: the payload has a "text" field). A webhook that
fails is logged, never raised: an alert must not fail the sensor that sends it.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from orchestration.settings import settings

log = logging.getLogger("quantlake.alerts")
WEBHOOK_ENV = "QUANTLAKE_ALERT_WEBHOOK"


def webhook_url() -> str | None:
    url = settings().alert_webhook
    return url.get_secret_value() if url is not None else None


def send_alert(title: str, details: dict[str, Any], url: str | None = None, timeout: float = 5.0, level: int = logging.ERROR) -> bool:
    """Logs the alert (at `level`: ERROR for trips and failures, INFO for a routine summary, so a log
    search for errors finds what needs a person) and posts it to the webhook; True when one accepted it."""
    url = url if url is not None else webhook_url()
    log.log(level, "alert: %s %s", title, json.dumps(details, default=str, sort_keys=True))
    if not url:
        return False
    body = json.dumps({"text": title, **details}, default=str).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        log.warning("alert webhook %s failed: %s", url.split("?")[0], exc)
        return False
