"""What the browser server accepts from a client, and how much of it: origins, host names, rates, idle time.

The server binds to one machine's players by default (127.0.0.1), but a page open in the same browser can
still reach it: a websocket is not bound by the same-origin policy, and DNS rebinding can point another name
at 127.0.0.1. So a handshake must come from the server's own page (or an allowed origin), every request must
name an allowed host, and no one client may take more than its share of the one batched step.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _hostname(host_header: str) -> str:
    """'example.org:8000' -> 'example.org'; '[::1]:8000' -> '::1' (lower case)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None, bound: str, allowed: tuple[str, ...]) -> bool:
    """DNS-rebinding guard. A server bound to a loopback address answers only loopback names (and `allowed`);
    one bound to a public or wildcard address answers any name unless `allowed` lists some. "*" allows all."""
    if "*" in allowed:
        return True
    if not host_header:
        return False
    name = _hostname(host_header)
    if name in (a.lower() for a in allowed):
        return True
    if is_loopback(bound):
        return name in LOOPBACK_NAMES or name == bound.lower().strip("[]")
    return not allowed


def origin_allowed(origin: str | None, host_header: str | None, allowed: tuple[str, ...]) -> bool:
    """Cross-site websocket guard. Browsers always send Origin on a websocket handshake: it must be the page the
    server itself served (same host:port as the Host header) or listed in `allowed` ("*" allows all). A
    missing Origin is a non-browser client (scripts, benchmarks), which no web page can impersonate."""
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    if origin == "null" or not host_header:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host_header.strip().lower()


@dataclass
class TokenBucket:
    """`rate` events per second on average, bursts of up to `burst`; `rate` 0 means no limit."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self):
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def allow(self, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class ClientLimits:
    """One player's budgets: messages, resets and recordings (each a token bucket)."""

    messages: TokenBucket
    resets: TokenBucket
    recordings: TokenBucket
    refused: int = 0  # messages dropped for going over a budget

    @classmethod
    def from_rates(cls, messages_per_s: float, resets_per_s: float, recordings_per_min: float) -> ClientLimits:
        return cls(TokenBucket(messages_per_s, max(1.0, 2 * messages_per_s)),
                   TokenBucket(resets_per_s, max(1.0, 3 * resets_per_s)),
                   TokenBucket(recordings_per_min / 60.0, 2.0))
