"""robots.txt per origin: the verdict on a fetch of it, its rules (protego), and a small disk cache.

tasks/fetch.py fetches `/robots.txt` through its own guarded fetcher (address guard on every hop,
deadline, pacing) and hands the outcome here. What an outcome means follows RFC 9309 section 2.3.1
and Google's documented handling of robots.txt:

    2xx                         RULES        the first 512 KiB parsed (RFC 9309: at least 500 KiB)
    4xx except 429              ALLOW_ALL    no robots.txt: everything may be crawled
    too many redirects, a loop  ALLOW_ALL    Google treats these like a 404
    refused hop, DNS, TLS,      ALLOW_ALL    cached briefly; the page's own fetch meets the same
    undecodable body                         problem and ends with that, truer, reason
    429, 5xx, timeout, connect  UNAVAILABLE  "do not crawl the host now": its URLs end `failed`
    error, deadline                          with reason `robots-unavailable` (re-drivable)

The cache is one JSON file per origin under `settings.cache_dir / "robots"`, trusted for
`robots_ttl` (24 h, as Google) or, for verdicts that come from an error, `robots_error_ttl`.
Why files and not DuckDB: fetching must not write the database (only tasks/load.py does, in one
transaction per batch), and concurrent runs and worker processes must share the cache without
holding DuckDB's single-writer lock; a file per origin replaced atomically needs no lock at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from protego import Protego

MAX_BYTES = 512 * 1024


class Verdict(StrEnum):
    RULES = "rules"
    ALLOW_ALL = "allow-all"
    UNAVAILABLE = "unavailable"


# Fetch failures (tasks/fetch.py reasons) after which the host is not crawled now.
UNAVAILABLE_REASONS = frozenset({"timeout", "connect-error", "protocol-error", "deadline",
                                 "retry-after-too-long", "http-429"})


@dataclass(frozen=True, slots=True)
class Robots:
    """What one origin's robots.txt says, and until when we believe it."""

    origin: str  # scheme://host[:port]
    verdict: Verdict
    text: str = ""
    fetched_at: float = 0.0  # time.time()
    cause: str = ""  # status or error the verdict came from, for logs
    from_error: bool = False  # a failure, not an answer: trusted for `robots_error_ttl` only

    def fresh(self, ttl: float, error_ttl: float) -> bool:
        """Still to be trusted now (the TTL is the reader's: a changed setting applies at once)."""
        return time.time() - self.fetched_at < (error_ttl if self.from_error else ttl)

    def allows(self, url: str, user_agent: str) -> bool:
        """May `user_agent` fetch `url`? Always False when unavailable."""
        if self.verdict is Verdict.UNAVAILABLE:
            return False
        return self.verdict is Verdict.ALLOW_ALL or _parse(self.text).can_fetch(url, user_agent)

    def delay(self, user_agent: str) -> float:
        """Seconds between requests the site asks for (Crawl-delay, or Request-rate); 0 if none."""
        if self.verdict is not Verdict.RULES:
            return 0.0
        rules = _parse(self.text)
        delay = rules.crawl_delay(user_agent) or 0.0
        rate = rules.request_rate(user_agent)
        if rate is not None and rate.requests > 0:
            delay = max(delay, rate.seconds / rate.requests)
        return float(delay)


def from_status(origin: str, status: int, body: bytes) -> Robots:
    """The verdict on a robots.txt response (after redirects)."""
    now = time.time()
    if 200 <= status < 300:
        text = body[:MAX_BYTES].decode("utf-8", "replace")
        return Robots(origin, Verdict.RULES, text, now, str(status))
    if 400 <= status < 500 and status != 429:
        return Robots(origin, Verdict.ALLOW_ALL, "", now, str(status))
    return Robots(origin, Verdict.UNAVAILABLE, "", now, str(status), from_error=True)


def from_error(origin: str, reason: str) -> Robots:
    """The verdict when fetching robots.txt failed with a fetch `reason`."""
    verdict = Verdict.UNAVAILABLE if _unavailable(reason) else Verdict.ALLOW_ALL
    return Robots(origin, verdict, "", time.time(), reason, from_error=True)


def _unavailable(reason: str) -> bool:
    return reason in UNAVAILABLE_REASONS or (reason.startswith("http-5") and len(reason) == 8)


@functools.lru_cache(maxsize=512)
def _parse(text: str) -> Protego:
    return Protego.parse(text)


class RobotsCache:
    """Fresh verdicts by origin, one JSON file each; shared by every process on the machine."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def get(self, origin: str, ttl: float, error_ttl: float) -> Robots | None:
        """The cached verdict for `origin` if it is still fresh."""
        try:
            data = json.loads(self._path(origin).read_text(encoding="utf-8"))
            robots = Robots(data["origin"], Verdict(data["verdict"]), data["text"], float(data["fetched_at"]),
                            str(data["cause"]), bool(data["from_error"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, or written by something else: fetch again
        return robots if robots.origin == origin and robots.fresh(ttl, error_ttl) else None

    def put(self, robots: Robots) -> None:
        """Store atomically: a reader sees the old file or the new one, never half of one."""
        fd, tmp = tempfile.mkstemp(dir=self._dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(asdict(robots), out)
            os.replace(tmp, self._path(robots.origin))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _path(self, origin: str) -> Path:
        return self._dir / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.json"
