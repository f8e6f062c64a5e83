"""The webhook channel: an alert POSTed to the owner's URL, signed so the receiver can trust it.

The signature is `X-Switchyard-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body
bytes under the shared secret; the receiver computes the same over what it read and compares
in constant time (`signature_matches`). 2xx is delivered; 408, 425, 429, 5xx, a timeout or a
refused connection may pass (retried); any other answer never will (dead letter, with the
receiver's status and first words).
"""

from __future__ import annotations

import hashlib
import hmac

import aiohttp

from router.errors import PermanentFailure
from router.notify.alert import NotDeliveredYet

SIGNATURE_HEADER = "X-Switchyard-Signature"
ALERT_ID_HEADER = "X-Switchyard-Alert-Id"
RETRIABLE = frozenset({408, 425, 429})
CONNECTIONS = 64  # to all receivers at once: bounds sockets under a burst of rings


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_matches(secret: str, body: bytes, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(signature(secret, body), given)


class WebhookSender:
    """POSTs signed alert bodies; one connection pool for the process."""

    def __init__(self, secret: str, timeout_s: float) -> None:
        self.secret = secret
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, url: str, body: bytes, alert_id: str) -> None:
        if not self.secret:
            raise PermanentFailure(
                "no webhook secret: set SWITCHYARD_WEBHOOK_SECRET (notify.webhook_secret)"
            )
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.secret, body),
            ALERT_ID_HEADER: alert_id,
        }
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    return
                said = (await response.text())[:200]
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise NotDeliveredYet(f"webhook {url}: {exc!r}") from exc
        message = f"webhook {url} answered {response.status}: {said}"
        if response.status in RETRIABLE or response.status >= 500:
            raise NotDeliveredYet(message)
        raise PermanentFailure(message)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=CONNECTIONS)
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
