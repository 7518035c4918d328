"""Signed webhooks: who registers them, how a delivery is signed, and the worker that delivers.

An event (a new version of a layer, or any event type put in the outbox with
:func:`geobase.catalog.webhooks.enqueue`) becomes one row per subscribed webhook in the outbox
table, in the transaction that makes the event. :class:`DeliveryWorker` (one thread per server
process; several processes share the outbox with ``SKIP LOCKED``) POSTs each due row as JSON::

    X-Geobase-Event: version
    X-Geobase-Delivery: <delivery id>          (the same on every retry: receivers de-duplicate)
    X-Geobase-Timestamp: <unix seconds>
    X-Geobase-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>

The timestamp is inside the signed string, so a captured delivery replayed later fails a
receiver that refuses old timestamps (:func:`verify`, ``tolerance_s``). A 2xx answer is success;
anything else (3xx included: a redirect is not followed, it could lead anywhere) is a failure,
retried after ``backoff * 2^(failures-1)`` seconds, until ``webhook_max_attempts`` failures put
the delivery on the dead-letter list, where an admin sees it and may retry it. Deliveries are
rows in PostgreSQL, so a restart loses none (at least once: a crash between sending and
recording resends after the lease). Secrets are made here, shown once, never logged or audited.

Private addresses: a webhook must not let a caller make the server POST into its own network
(loopback, RFC 1918, link-local, cloud metadata at 169.254.169.254, ...) unless the deployment
allows it (:func:`private_allowed`: ``GEOBASE_WEBHOOK_ALLOW_PRIVATE``; by default refused in the
internet zone, allowed in the government and classified ones, whose receivers are internal). The
check runs at registration (400) and again at every delivery on the addresses the name resolves
to then, and the delivery connects to exactly the address it checked: a name that resolved to a
public address at registration and to a private one later (DNS rebinding) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

import psycopg

from geobase.catalog import webhooks as outbox
from geobase.db import database_url
from geobase.errors import InvalidInput
from geobase.settings import Settings

log = logging.getLogger("geobase.webhooks")

MAX_URL = 2000
EVENTS = ("version",)
SIGNATURE = "X-Geobase-Signature"
TIMESTAMP = "X-Geobase-Timestamp"


def check_url(url: object) -> str:
    """A webhook URL as accepted: http(s), a host, no credentials, no fragment, no spaces or
    control characters, at most 2000 characters. InvalidInput (400) naming what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("url: an http(s) URL is required", parameter="url")
    if len(url) > MAX_URL:
        raise InvalidInput(f"url: longer than {MAX_URL} characters", parameter="url")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidInput("url: spaces or control characters are not allowed", parameter="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url: not a URL ({exc})", parameter="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput(f"url: only http and https are allowed, not {parts.scheme[:20]!r}", parameter="url")
    if not parts.hostname:
        raise InvalidInput("url: names no host", parameter="url")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidInput("url: credentials in the URL are not allowed (the signature authenticates us)",
                           parameter="url")
    if parts.fragment:
        raise InvalidInput("url: a fragment (#...) is never sent; leave it out", parameter="url")
    if port == 0:
        raise InvalidInput("url: port 0", parameter="url")
    return url


class PrivateAddress(OSError):
    """A webhook host resolves to an address this deployment may not POST to."""


def private_allowed(settings: Settings) -> bool:
    """May webhooks reach non-global addresses? The setting, else: not in the internet zone."""
    if settings.webhook_allow_private is not None:
        return settings.webhook_allow_private
    return settings.network_zone != "internet"


def _non_global(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return not ip.is_global or ip.is_multicast


def resolve(host: str, port: int, settings: Settings) -> list[str]:
    """The addresses ``host`` resolves to now, each allowed (else :class:`PrivateAddress` naming
    it); OSError when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OSError(f"{host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not private_allowed(settings):
        refused = [a for a in addresses if _non_global(a)]
        if refused:
            raise PrivateAddress(f"{host!r} resolves to {refused[0]}, a private, loopback or otherwise non-global "
                                 f"address: not allowed in the {settings.network_zone} zone "
                                 "(GEOBASE_WEBHOOK_ALLOW_PRIVATE)")
    return addresses


def check_reachable(url: str, settings: Settings) -> None:
    """At registration: refuse (400) a URL whose host may not be reached from this deployment."""
    if private_allowed(settings):
        return
    parts = urlsplit(url)
    try:
        resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), settings)
    except OSError as exc:
        raise InvalidInput(f"url: {exc}", parameter="url") from None


def check_events(events: object) -> list[str]:
    if events is None:
        return list(EVENTS)
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise InvalidInput("events: a non-empty list of event names", parameter="events")
    if len(events) > 20 or any(len(e) > 63 or not e.replace("_", "").replace(".", "").isalnum() for e in events):
        raise InvalidInput("events: at most 20 names of letters, digits, '_' and '.'", parameter="events")
    return sorted(set(events))


def new_secret() -> str:
    """A fresh signing secret (256 bits): returned once to whoever registers the webhook."""
    return "whsec_" + secrets.token_urlsafe(32)


def register(conn: psycopg.Connection, settings: Settings, *, layer: str, url: object, events: object,
             description: str | None, department: str | None, created_by: str) -> dict:
    """Register a webhook (checked URL, reachable from this deployment, and events) in the caller's
    transaction; the returned dict holds the secret: the only time it is shown."""
    url = check_url(url)
    check_reachable(url, settings)
    secret = new_secret()
    row = outbox.add_webhook(conn, layer=layer, url=url, secret=secret, events=check_events(events),
                             description=description, department=department, created_by=created_by)
    return {**row, "secret": secret}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Geobase-Signature`` value: ``sha256=`` HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str, *, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver checks: the signature matches (constant time) and the timestamp is recent."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= tolerance_s and hmac.compare_digest(signature(secret, timestamp, body), header or "")


def base_url(settings: Settings) -> str:
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")


def render_body(payload: dict, root: str) -> str:
    """The JSON body of a delivery; a version event gets the link to its diff."""
    body = dict(payload)
    if body.get("event") == "version" and body.get("version") is not None:
        prev = body.get("previous_version") or 0
        body["diff"] = f"{root}/collections/{body['layer']}/changes?from={prev}&to={body['version']}"
    return json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def _pinned_socket(addresses: list[str], port: int, timeout: float) -> socket.socket:
    error: OSError = OSError("no address")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            error = exc
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to the checked addresses only (the Host header still names the host)."""

    def __init__(self, host: str, port: int | None, addresses: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self) -> None:
        self.sock = _pinned_socket(self.addresses, self.port, self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the checked addresses only; the certificate is verified against the host name."""

    def __init__(self, host: str, port: int | None, addresses: list[str], timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.addresses = addresses

    def connect(self) -> None:
        sock = _pinned_socket(self.addresses, self.port, self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float, settings: Settings) -> int:
    """POST ``body`` to the addresses the URL's host resolves to now, checked (PrivateAddress);
    the HTTP status (no redirect followed). Raises OSError on network failure."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(parts.hostname or "", port, settings)
    cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    conn = cls(parts.hostname or "", port, addresses, timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", path, body=body, headers={**headers, "Content-Type": "application/json",
                                                       "User-Agent": "geobase-webhooks/1"})
        resp = conn.getresponse()
        resp.read(65536)
        return resp.status
    finally:
        conn.close()


def retry_delay(settings: Settings, failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed ones (exponential, capped at 1 h)."""
    return min(settings.webhook_backoff_s * 2 ** max(0, failures - 1), 3600.0)


def deliver_one(conn: psycopg.Connection, settings: Settings, row: dict) -> str:
    """Attempt one claimed delivery and record the outcome: 'delivered', 'retry', 'dead', 'cancelled'."""
    if row["removed"]:
        outbox.cancel(conn, row["id"])
        return "cancelled"
    body = row["body"]
    if body is None:
        body = render_body(row["payload"], base_url(settings))
        outbox.set_body(conn, row["id"], body)
    raw, ts = body.encode(), str(int(time.time()))
    headers = {"X-Geobase-Event": row["event"], "X-Geobase-Delivery": str(row["id"]), TIMESTAMP: ts,
               SIGNATURE: signature(row["secret"], ts, raw)}
    status, error = None, ""
    try:
        status = post(row["url"], raw, headers, settings.webhook_timeout_s, settings)
        if 200 <= status < 300:
            outbox.record_success(conn, row["id"], status)
            return "delivered"
        error = f"HTTP {status}"
    except PrivateAddress as exc:  # a policy refusal, not a failure a retry would cure: dead at once
        outbox.record_failure(conn, row["id"], None, f"refused: {exc}"[:300], dead=True, retry_in_s=0.0)
        return "dead"
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    failures = row["attempts"] + 1
    dead = failures >= settings.webhook_max_attempts
    outbox.record_failure(conn, row["id"], status, error, dead=dead, retry_in_s=retry_delay(settings, failures))
    return "dead" if dead else "retry"


def run_once(conn: psycopg.Connection, settings: Settings, batch: int = 20) -> int:
    """Claim and attempt the due deliveries once; returns how many were attempted."""
    rows = outbox.claim_due(conn, batch, settings.webhook_timeout_s + 30.0)
    for row in rows:
        deliver_one(conn, settings, row)
    return len(rows)


class DeliveryWorker:
    """The background thread of one server process that empties the outbox."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="webhook-deliveries", daemon=True)

    def start(self) -> "DeliveryWorker":
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            busy = 0
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(database_url(self.settings), autocommit=True, connect_timeout=10)
                busy = run_once(conn, self.settings)
            except Exception as exc:  # the database may be down or not migrated yet: try again later
                log.warning("webhook deliveries: %s", type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            if not busy:
                self._stop.wait(self.settings.webhook_poll_s)
        if conn is not None:
            conn.close()

