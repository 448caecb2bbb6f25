"""Webhooks: where they may go (SSRF rules), the tenants' signing secrets, and the outbox.

**URLs.** Only http and https. A host written in Unicode is IDNA-encoded (UTS #46, as browsers do:
``bücher.example`` is ``xn--bcher-kva.example``, ``①②⑦.0.0.1`` is ``127.0.0.1``) and checked, resolved,
sent (``Host``, TLS server name) and matched against the allow list in that ASCII form only; a host
IDNA refuses is refused. The host is resolved and every address it resolves to must be public:
loopback, private, link-local (the cloud metadata address 169.254.169.254 among them, and
fd00:ec2::254), unspecified, multicast and reserved addresses are refused, and so is an IPv6 address
that embeds an IPv4 address which is not public (IPv4-mapped, IPv4-compatible, 6to4 ``2002::/16``,
Teredo ``2001::/32``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``), unless
``LORAMERGE_WEBHOOK_ALLOWED_HOSTS`` names the host, or a CIDR (or address) that holds the address.
The API checks at submission (422 ``webhook_url_not_allowed``); the sender checks again at every
attempt and connects to the address it checked (no second lookup a DNS rebinding could win).

**Secrets.** One ``whsec_`` secret per tenant, made on first use, sealed with the server's key
(``jobs.secrets.TokenBox``) so Redis never holds it in clear text. A rotation keeps the previous one
signing too for ``webhook_secret_grace_s``.

**Outbox.** ``jobs.events`` queues a delivery in the transaction that changes the job. A delivery is a
JSON document (``wh:delivery:{msg}``) and a member of the ``wh:outbox`` sorted set, scored by when it
is due. The sender claims a due delivery with a lease (a token of its own, for longer than an
attempt's hard time limit), attempts it, and either removes it from the outbox (delivered, given up,
or 410 Gone) or scores it at its next attempt. That record is fenced by the lease: it is written only
while the lease still holds the attempt's token, so an attempt that outlived its lease (a frozen
process) records nothing and counts nothing; the delivery is the next holder's. The sweep re-sends
the task of a delivery due for more than ``SWEEP_GRACE_S`` with no lease on it (its task was lost).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna
import redis

from jobs.events import OUTBOX_KEY, PREFIX, delivery_key, job_deliveries_key
from jobs.records import now
from jobs.secrets import TokenBox
from jobs.webhook_signing import new_secret

SWEEP_GRACE_S = 5.0
OUTCOMES_KEY = f"{PREFIX}wh:outcomes"  # hash: succeeded, failed, gone -> deliveries
ATTEMPTS_KEY = f"{PREFIX}wh:attempts"  # hash: ok, error -> attempts
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlNotAllowedError(ValueError):
    """The webhook URL is not http(s), does not resolve, or reaches an address the rules refuse."""


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    scheme: str
    host: str  # lower case, IDNA-encoded (ASCII), without brackets
    port: int
    target: str  # path and query
    address: str  # the checked address to connect to

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == default else f"{shown}:{self.port}"

    @property
    def connect_url(self) -> str:
        shown = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{shown}:{self.port}{self.target}"


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, by the form that carries them."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo", server), ("Teredo", client)]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in NAT64):
        found.append(("NAT64", low32))
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d, IPv4-compatible (deprecated); not :: or ::1
        found.append(("IPv4-compatible", low32))
    return found


def why_refused(address: IPAddress) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        for form, inner in embedded_ipv4(address):
            reason = why_refused(inner)
            if reason is not None:
                return f"a {form} address embedding {inner}, {reason}"
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{name}"):
            return f"a {name.replace('_', '-')} address"
    if not address.is_global:
        return "not a public address"
    return None


def _allowed(host: str, address: IPAddress, allowed: list[str]) -> bool:
    for entry in allowed:
        entry = entry.strip().lower().strip("[]")
        if entry == host:
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _resolve(host: str, port: int, resolve: Callable[..., list]) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise  # the sender's time limit for the attempt ran out while resolving: a timeout, not a refusal
    except (OSError, UnicodeError) as exc:
        raise UrlNotAllowedError(f"{host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos))
    if not addresses:
        raise UrlNotAllowedError(f"{host} does not resolve")
    return addresses


def ascii_host(host: str) -> str:
    """The host as it is resolved and sent: lower case, a Unicode name IDNA-encoded (UTS #46)."""
    if host.isascii():
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise UrlNotAllowedError(f"the host {host!r} is not a valid internationalized domain name ({exc})") from None


def check_url(url: str, allowed: list[str], *, resolve: Callable[..., list] = socket.getaddrinfo) -> CheckedUrl:
    """Resolve ``url`` and check every address; returns the address to connect to."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowedError(f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlNotAllowedError("only http and https URLs are accepted")
    host = parts.hostname or ""
    if not host:
        raise UrlNotAllowedError("the URL has no host")
    if any(ord(c) < 33 for c in url):
        raise UrlNotAllowedError("the URL holds spaces or control characters")
    host = ascii_host(host)
    port = port or (443 if scheme == "https" else 80)
    addresses = _resolve(host, port, resolve)
    for address in addresses:
        reason = why_refused(address)
        if reason is not None and not _allowed(host, address, allowed):
            raise UrlNotAllowedError(
                f"{host} resolves to {address}, {reason}; allow it with LORAMERGE_WEBHOOK_ALLOWED_HOSTS if it is meant"
            )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return CheckedUrl(url=url, scheme=scheme, host=host, port=port, target=target, address=str(addresses[0]))


# -- secrets -------------------------------------------------------------------------------------
class WebhookSecrets:
    """Per-tenant signing secrets, sealed at rest. ``current`` makes one on first use."""

    def __init__(self, client: redis.Redis, box: TokenBox, *, grace_s: float) -> None:
        self.redis, self.box, self.grace_s = client, box, grace_s

    @staticmethod
    def key(tenant: str) -> str:
        return f"{PREFIX}wh:secret:{tenant}"

    def _read(self, tenant: str) -> dict | None:
        raw = self.redis.get(self.key(tenant))
        return json.loads(raw) if raw else None

    def current(self, tenant: str) -> str:
        stored = self._read(tenant)
        if stored is None:
            self.redis.set(self.key(tenant), json.dumps({"current": self.box.seal(new_secret())}), nx=True)
            stored = self._read(tenant)
        secret = self.box.open(stored["current"])
        if secret is None:
            raise RuntimeError("the webhook secret was sealed with another key (LORAMERGE_SECRET_KEY changed)")
        return secret

    def signing(self, tenant: str) -> list[str]:
        """The secrets a delivery is signed with now: the current one, and the previous one during its grace."""
        current = self.current(tenant)
        stored = self._read(tenant) or {}
        secrets = [current]
        if stored.get("previous") and float(stored.get("previous_until", 0)) > now():
            previous = self.box.open(stored["previous"])
            if previous is not None:
                secrets.append(previous)
        return secrets

    def rotate(self, tenant: str) -> str:
        self.current(tenant)
        fresh = new_secret()
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self.key(tenant))
                    stored = json.loads(pipe.get(self.key(tenant)))
                    pipe.multi()
                    pipe.set(
                        self.key(tenant),
                        json.dumps(
                            {
                                "current": self.box.seal(fresh),
                                "previous": stored["current"],
                                "previous_until": now() + self.grace_s,
                            }
                        ),
                    )
                    pipe.execute()
                    return fresh
                except redis.WatchError:
                    continue


# -- the outbox ----------------------------------------------------------------------------------
_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return {'done', ''} end
if tonumber(score) > tonumber(ARGV[2]) + 1 then return {'later', ''} end
if not redis.call('SET', KEYS[3], ARGV[4], 'NX', 'PX', ARGV[3]) then return {'busy', ''} end
local raw = redis.call('GET', KEYS[2])
if not raw then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[3])
  return {'done', ''}
end
return {'claimed', raw}
"""

_SWEEP = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local resend = {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', KEYS[2] .. id) == 0 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(resend, id)
  end
end
return resend
"""

# An attempt's result, written only while the lease still holds the attempt's token (the fence).
_RECORD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
else
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HINCRBY', KEYS[4], ARGV[6], 1)
end
if ARGV[6] == 'gone' then redis.call('SET', KEYS[6], '1', 'EX', ARGV[3]) end
if ARGV[7] ~= '' then redis.call('HINCRBY', KEYS[5], ARGV[7], 1) end
redis.call('DEL', KEYS[1])
return 1
"""


def lease_key(delivery_id: str) -> str:
    return f"{PREFIX}wh:lease:{delivery_id}"


def gone_key(job_id: str) -> str:
    return f"{PREFIX}wh:gone:{job_id}"


class Outbox:
    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self.redis, self.ttl_s = client, ttl_s
        self._claim = client.register_script(_CLAIM)
        self._sweep = client.register_script(_SWEEP)
        self._record = client.register_script(_RECORD)

    def claim(self, delivery_id: str, *, lease_s: float, holder: str) -> dict | None:
        """The delivery, leased to ``holder`` (a token unique to this attempt), when it is due and nobody
        else attempts it."""
        state, raw = self._claim(
            keys=[OUTBOX_KEY, delivery_key(delivery_id), lease_key(delivery_id)],
            args=[delivery_id, time.time(), int(lease_s * 1000), holder],
        )
        return json.loads(raw) if state == "claimed" else None

    def is_gone(self, job_id: str) -> bool:
        return bool(self.redis.exists(gone_key(job_id)))

    def record(self, delivery: dict, attempt: dict, *, next_at: float | None, outcome: str | None, holder: str) -> bool:
        """Store one attempt; ``next_at`` schedules the next, ``outcome`` (succeeded, failed, gone) ends it.
        Fenced: nothing is written (and False returned) unless ``holder``'s lease still holds the delivery."""
        delivery["attempts"].append(attempt)
        delivery["next_attempt_at"] = next_at
        if outcome is not None:
            delivery["state"] = outcome
        counted = "" if attempt.get("skipped") else ("ok" if outcome == "succeeded" else "error")
        written = self._record(
            keys=[
                lease_key(delivery["id"]),
                delivery_key(delivery["id"]),
                OUTBOX_KEY,
                OUTCOMES_KEY,
                ATTEMPTS_KEY,
                gone_key(delivery["job_id"]),
            ],
            args=[
                holder,
                json.dumps(delivery),
                self.ttl_s,
                delivery["id"],
                "" if next_at is None else repr(next_at),
                outcome or "failed",
                counted,
            ],
        )
        return bool(written)

    def skip(self, delivery: dict, why: str, *, holder: str) -> bool:
        """End a delivery without sending it (its URL answered 410 Gone for an earlier event of the job)."""
        attempt = {"at": now(), "status_code": None, "error": why, "skipped": True}
        return self.record(delivery, attempt, next_at=None, outcome="gone", holder=holder)

    def sweep(self, *, grace_s: float = SWEEP_GRACE_S, limit: int = 500) -> list[str]:
        """Deliveries due for more than ``grace_s`` that nobody holds: their task was lost. They are
        scored due now again (so the next sweep leaves them alone for ``grace_s``) and returned."""
        moment = time.time()
        return list(self._sweep(keys=[OUTBOX_KEY, f"{PREFIX}wh:lease:"], args=[moment - grace_s, moment, limit]))

    def pending(self) -> int:
        return self.redis.zcard(OUTBOX_KEY)

    def for_job(self, job_id: str) -> list[dict]:
        ids = self.redis.lrange(job_deliveries_key(job_id), 0, -1)
        raws = self.redis.mget([delivery_key(i) for i in ids]) if ids else []
        return [json.loads(raw) for raw in raws if raw is not None]

    def outcomes(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.redis.hgetall(OUTCOMES_KEY).items()}

    def attempts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.redis.hgetall(ATTEMPTS_KEY).items()}
