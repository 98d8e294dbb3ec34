"""Outgoing HTTP to recipients' endpoints: the one hardened way out of the broker's network.

Outgoing requests are hostile territory (server-side request forgery): a
subscriber could name an address inside the broker's network. So:

- ``https`` only; plain ``http`` only to loopback, and only with the development
  setting ``BROKER_WEBHOOK_ALLOW_HTTP_LOOPBACK=1`` (loopback is refused otherwise);
- every address a name resolves to is checked (:func:`refusal`): private,
  loopback, link-local (cloud metadata), CGNAT, multicast, reserved, unspecified,
  IPv4-mapped, IPv4-compatible, 6to4/Teredo/NAT64 wrappers of such addresses; one
  bad address refuses the whole name;
- the connection goes to the vetted addresses only: the check runs inside the
  client's resolver (:class:`VettingResolver`), so no second lookup can differ;
- redirects are followed by hand (at most :data:`MAX_REDIRECTS`), each hop checked;
- a total timeout, a response-size cap, ``trust_env=False`` (no proxy from the
  environment).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from broker.errors import BrokerError

MAX_REDIRECTS = 3
MAX_RESPONSE_BYTES = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Resolves a host name to its addresses (injectable: tests never do real DNS).
Lookup = Callable[[str, int], Awaitable[list[str]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class UrlRefused(BrokerError):
    """The webhook URL, or an address it resolves or redirects to, may not be called."""

    code = "webhook_url_refused"
    status = 422
    title = "Webhook URL not allowed"


@dataclass(frozen=True)
class EgressPolicy:
    allow_http_loopback: bool = False  # development only
    timeout_seconds: float = 10.0
    max_response_bytes: int = MAX_RESPONSE_BYTES


def refusal(address: str, *, allow_loopback: bool) -> str | None:
    """Why ``address`` may not be called, or None when it is a public unicast address."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return f"an IPv6 address wrapping {embedded} is not allowed"
    if ip.is_loopback:
        return None if allow_loopback else "loopback addresses are not allowed"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT addresses are not allowed"
    if ip.is_link_local:
        return "link-local addresses (cloud metadata) are not allowed"
    if ip.is_multicast:
        return "multicast addresses are not allowed"
    if ip.is_unspecified:
        return "the unspecified address is not allowed"
    if ip.is_private:
        return "private addresses are not allowed"
    if ip.is_reserved or not ip.is_global:
        return "reserved addresses are not allowed"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _NAT64_LOCAL or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


async def system_lookup(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


def _split(url: str, policy: EgressPolicy) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL shape; raises :class:`UrlRefused`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("the URL is not valid") from exc
    scheme = parts.scheme.lower()
    if scheme not in {"https", "http"}:
        raise UrlRefused("the URL must use https")
    if scheme == "http" and not policy.allow_http_loopback:
        raise UrlRefused("the URL must use https")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("the URL must not carry credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("the URL has no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


async def vet_url(url: str, policy: EgressPolicy, lookup: Lookup = system_lookup) -> list[str]:
    """The addresses ``url`` may be called at; raises :class:`UrlRefused` before any connection."""
    scheme, host, port = _split(url, policy)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = await lookup(host, port)
        except OSError as exc:
            raise UrlRefused("the URL's host name does not resolve") from exc
    if not addresses:
        raise UrlRefused("the URL's host name does not resolve")
    for address in addresses:
        reason = refusal(address, allow_loopback=policy.allow_http_loopback)
        if reason is not None:
            raise UrlRefused(f"the URL's host resolves to a forbidden address: {reason}")
    if scheme == "http" and not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        raise UrlRefused("the URL must use https (plain http only to loopback, in development)")
    return addresses


class VettingResolver(AbstractResolver):
    """The client's resolver: looks a name up once and hands back only vetted addresses."""

    def __init__(self, policy: EgressPolicy, lookup: Lookup) -> None:
        self.policy = policy
        self.lookup = lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await vet_url(f"https://{_bracket(host)}:{port}/", self.policy, self.lookup)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=socket.IPPROTO_TCP,
                flags=socket.AI_NUMERICHOST,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        return None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class Response:
    """What an endpoint answered: a status, or an error before any status."""

    status: int | None
    retry_after: float | None = None
    error: str = ""


class Egress:
    """An HTTP client for webhook deliveries; open with :meth:`start`, close with :meth:`close`."""

    def __init__(self, policy: EgressPolicy, lookup: Lookup = system_lookup) -> None:
        self.policy = policy
        self.lookup = lookup
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            resolver=VettingResolver(self.policy, self.lookup),
            use_dns_cache=False,
            limit=200,
            force_close=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=self.policy.timeout_seconds),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """POST ``body``; redirects followed by hand, each hop vetted before connecting."""
        if self._session is None:
            raise RuntimeError("the egress client is not started")
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                await vet_url(url, self.policy, self.lookup)
                async with self._session.post(
                    url, data=body, headers=dict(headers), allow_redirects=False
                ) as answer:
                    await _drain(answer, self.policy.max_response_bytes)
                    location = answer.headers.get("Location")
                    if answer.status in _REDIRECTS and location:
                        url = urljoin(url, location)
                        continue
                    return Response(answer.status, _retry_after(answer.headers))
            except UrlRefused as exc:
                return Response(None, error=f"refused: {exc.detail}"[:300])
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return Response(None, error=f"{type(exc).__name__}: {exc}"[:300])
        return Response(None, error=f"more than {MAX_REDIRECTS} redirects")


async def _drain(answer: aiohttp.ClientResponse, cap: int) -> None:
    """Read at most ``cap`` bytes of the answer (its content is not used)."""
    read = 0
    async for chunk in answer.content.iter_chunked(8192):
        read += len(chunk)
        if read >= cap:
            answer.close()
            return


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
