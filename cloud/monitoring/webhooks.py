"""Webhook delivery of alarm transitions: JSON, HMAC-SHA256 signed, retried with backoff, failures kept.

Deliveries are rows of `webhook_deliveries`, written in the transaction of the alarm transition they announce
(`alarms.Store.save`), so none is lost or sent for a transition that did not commit. This sender posts the
due ones in order: 2xx is delivered; anything else (status, refused connection, timeout) is retried after
`base_s * 2**attempt` (capped at `max_s`) until `max_attempts`, then kept as failed with the last error --
visible in `GET /api/v1/webhooks/{id}/deliveries`.

The receiver checks `X-Zhizao-Signature: sha256=<hex>`, the HMAC-SHA256 with the webhook's secret over
`<X-Zhizao-Timestamp>.<body>` (the timestamp bounds replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from zhizao.cloud.storage.db import StorageError, make_pool, translate_errors

log = logging.getLogger(__name__)

__all__ = ["WebhookSender", "sign"]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp` (seconds since the epoch, as text)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSender:
    """Posts due deliveries from its own thread; `wake()` after a commit makes it look at once."""

    def __init__(self, conninfo: str, *, base_s: float = 1.0, max_s: float = 300.0, max_attempts: int = 8,
                 timeout_s: float = 5.0, poll_s: float = 2.0) -> None:
        self.conninfo = conninfo
        self.base_s = base_s
        self.max_s = max_s
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: Any = None
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        """Start the sender thread."""
        if self._thread is None:
            self._pool = make_pool(self.conninfo, min_size=1, max_size=1, name="zhizao-webhooks")
            self._thread = threading.Thread(target=self._run, name="zhizao-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop (deliveries not yet sent stay pending for the next start)."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(self.timeout_s + 5)
        self._thread = None
        self._pool.close()

    def wake(self) -> None:
        """New deliveries may be due."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self._send_due() and not self._stop.is_set():
                    pass
            except StorageError as exc:
                log.warning("webhooks: database unavailable: %s", exc)
            except Exception:
                log.exception("webhooks: sender failed; retrying")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _send_due(self, limit: int = 50) -> bool:
        """Send up to `limit` due deliveries; True when there may be more."""
        with translate_errors(), self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT d.id, d.attempts, d.payload, h.url, h.secret FROM webhook_deliveries d"
                " JOIN webhooks h ON h.id = d.webhook_id WHERE d.status = 'pending' AND d.next_at <= now()"
                " ORDER BY d.id LIMIT %s", [limit]).fetchall()
            conn.commit()
            for did, attempts, body, url, secret in rows:
                if self._stop.is_set():
                    return False
                status, error = self._post(str(url), str(secret), json.dumps(body).encode())
                attempts = int(attempts) + 1
                if error is None:
                    self.delivered += 1
                    conn.execute("UPDATE webhook_deliveries SET status = 'delivered', attempts = %s, last_status = %s,"
                                 " last_error = NULL, delivered_at = now() WHERE id = %s", [attempts, status, did])
                elif attempts >= self.max_attempts:
                    self.failed += 1
                    log.warning("webhook delivery %s to %s failed for good after %d attempts: %s", did, url, attempts,
                                error)
                    conn.execute("UPDATE webhook_deliveries SET status = 'failed', attempts = %s, last_status = %s,"
                                 " last_error = %s WHERE id = %s", [attempts, status, error, did])
                else:
                    delay = min(self.max_s, self.base_s * 2 ** (attempts - 1))
                    conn.execute("UPDATE webhook_deliveries SET attempts = %s, last_status = %s, last_error = %s,"
                                 " next_at = %s WHERE id = %s",
                                 [attempts, status, error, datetime.now(UTC) + timedelta(seconds=delay), did])
                conn.commit()
        return len(rows) == limit

    def _post(self, url: str, secret: str, body: bytes) -> tuple[int | None, str | None]:
        """(HTTP status, error or None when delivered)."""
        ts = str(int(time.time()))
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "zhizao-webhooks/1",
            "X-Zhizao-Timestamp": ts, "X-Zhizao-Signature": sign(secret, ts, body)})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                code = int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code), f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        return (code, None) if 200 <= code < 300 else (code, f"HTTP {code}")
