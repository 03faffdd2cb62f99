"""HTTP helpers for the API clients we wrap (alpaca-py's data and trading clients)."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter


class TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout: alpaca-py passes none, so a silent server would hang us forever."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(max_retries=0)  # no transport retries: whether to resend is the caller's decision
        self._timeout_s = timeout_s

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        return super().send(
            request,
            stream=stream,
            timeout=self._timeout_s if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )


def install_timeout(session: requests.Session, timeout_s: float) -> None:
    adapter = TimeoutAdapter(timeout_s)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
