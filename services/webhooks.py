"""Webhooks: signed POSTs of a submission's result to its callback URL, retried with backoff.

Signature: `X-Grader-Signature: sha256=HEX`, the HMAC-SHA256 of `TIMESTAMP.BODY` with the
submitting key's webhook secret; `X-Grader-Timestamp` carries TIMESTAMP (Unix seconds)
so a receiver can refuse replays. Callback hosts must resolve to public addresses unless
their network is allowed in the settings. Bodies are capped (a result too large travels
without its details, which the receiver can GET); the receiver's answer is never read
beyond its status line and headers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import ApiKey, DeliveryStatus, Submission, WebhookDelivery, aware, now
from services.errors import InvalidInput

MAX_URL = 2000
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ERROR_CHARS = 500


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest("sha256=" + sign(secret, timestamp, body), signature)


def _allowed(address: str, settings: Settings) -> bool:
    ip = ipaddress.ip_address(address)
    extra = [
        ipaddress.ip_network(n.strip())
        for n in settings.webhook_allowed_networks.split(",")
        if n.strip()
    ]
    if any(ip in net for net in extra):
        return True
    return ip.is_global


def check_callback_url(url: str, settings: Settings, resolve: bool = False) -> None:
    """Refuse URLs that are not http(s), or (when resolving) that point at private addresses."""
    if len(url) > MAX_URL:
        raise InvalidInput(f"callback_url is longer than {MAX_URL} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("callback_url must be an http or https URL with a host")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if literal is not None and not _allowed(str(literal), settings):
        raise InvalidInput("callback_url points at a private or reserved address")
    if resolve:
        try:
            infos = socket.getaddrinfo(
                parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
            )
        except OSError as exc:
            raise InvalidInput(f"callback_url host does not resolve: {exc}") from None
        if any(not _allowed(info[4][0], settings) for info in infos):
            raise InvalidInput("callback_url resolves to a private or reserved address")


def _encode(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def payload(row: Submission) -> bytes:
    """The signed body; over MAX_PAYLOAD_BYTES the result's details stay behind (`result: null`,
    `result_omitted: true`) and the receiver reads them with GET /v1/submissions/{id}."""
    body = {
        "event": "submission.completed", "submission_id": row.id, "task_id": row.task_id,
        "student_id": row.student_id, "outcome": row.outcome, "score": row.score,
        "max_score": row.max_score, "result": row.result,
    }  # fmt: skip
    encoded = _encode(body)
    if len(encoded) <= MAX_PAYLOAD_BYTES:
        return encoded
    return _encode(body | {"result": None, "result_omitted": True})


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
    """POST and return the status code; the response body is never read."""
    with (
        httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
        client.stream("POST", url, content=body, headers=headers) as response,
    ):
        return response.status_code


def attempt(session: Session, delivery_id: str, settings: Settings) -> float | None:
    """Try one delivery. Returns the delay before the next try, or None when done (delivered,
    failed, or not due yet: a message for the due try is already on its way)."""
    delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    due = aware(delivery.next_attempt_at)
    if due is not None and due > now() + timedelta(seconds=1):
        return None
    row = session.get(Submission, delivery.submission_id)
    key = session.get(ApiKey, row.client_key_id)
    body = payload(row)
    timestamp = str(int(time.time()))
    delivery.attempts += 1
    try:
        check_callback_url(delivery.url, settings, resolve=True)
        status_code = _post(
            delivery.url, body, timeout_s=settings.webhook_timeout_s,
            headers={
                "Content-Type": "application/json", "X-Grader-Timestamp": timestamp,
                "X-Grader-Signature": "sha256=" + sign(key.webhook_secret, timestamp, body),
                "X-Grader-Delivery": delivery.id,
            },
        )  # fmt: skip
        delivery.last_status_code, delivery.last_error = status_code, None
        if 200 <= status_code < 300:
            delivery.status, delivery.delivered_at = DeliveryStatus.DELIVERED, now()
            return None
        delivery.last_error = f"HTTP {status_code}"
    except InvalidInput as exc:
        delivery.status, delivery.last_error = DeliveryStatus.FAILED, str(exc)
        return None
    except httpx.HTTPError as exc:
        delivery.last_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    if delivery.attempts >= settings.webhook_max_attempts:
        delivery.status = DeliveryStatus.FAILED
        return None
    delay = settings.webhook_backoff_s * 2 ** (delivery.attempts - 1)
    delivery.next_attempt_at = now() + timedelta(seconds=delay)
    return delay


def overdue(session: Session, settings: Settings) -> list[str]:
    """Pending deliveries whose next try is long past due: their message was lost."""
    limit = now() - timedelta(seconds=settings.stuck_grace_s + settings.webhook_timeout_s)
    found = session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            func.coalesce(WebhookDelivery.next_attempt_at, WebhookDelivery.created_at) < limit,
        )
        .with_for_update(skip_locked=True)
    ).all()
    for delivery in found:
        delivery.next_attempt_at = now()
    return [d.id for d in found]


def deliveries_of(session: Session, submission_id: str) -> list[WebhookDelivery]:
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.submission_id == submission_id)
            .order_by(WebhookDelivery.created_at)
        )
    )
