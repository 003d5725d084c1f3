"""Outbound HTTP safety for ``http`` and ``llm`` nodes (SPEC section 7): an SSRF guard.

Every TCP connection a guarded client opens goes through ``GuardedNetworkBackend``: the host is
resolved once, every address it resolves to is vetted, and the socket is opened to a vetted
address (never to the name, which a DNS-rebinding attacker could answer differently a moment
later). TLS still verifies the certificate against, and sends SNI for, the URL's host name,
because httpcore takes those from the request's origin, not from the connected address.

Refused always: cloud metadata endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200,
metadata.google.internal) and all link-local addresses (169.254.0.0/16, fe80::/10), also when
spelled as IPv4-mapped, NAT64 or 6to4 IPv6. Refused unless ``allow_private`` (true in embedded
mode): loopback, private, shared (CGNAT), reserved, multicast and unspecified addresses, i.e.
anything that is not globally routable. Redirects are vetted too: each hop opens its own
connection through the same backend.

httpx has no option for a network backend, but httpcore's connection pool does; the transport
below builds the pool httpx would build and hands it the guarded backend.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

__all__ = [
    "BlockedAddressError",
    "GuardedNetworkBackend",
    "GuardedTransport",
    "HostResolver",
    "address_problem",
    "guarded_client",
    "is_guarded",
    "vet_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Resolves (host, port) to IP address strings, in preference order.
HostResolver = Callable[[str, int], Awaitable[list[str]]]

METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_ALWAYS_BLOCKED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OCI metadata)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddressError(Exception):
    """A connection the guard refused. The message names the host, never a resolved address."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"requests to {host!r} are refused: {reason}")
        self.host = host
        self.reason = reason


def _forms(ip: IPAddress) -> Iterable[IPAddress]:
    """The address and any IPv4 address it embeds (mapped, NAT64, 6to4)."""
    yield ip
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            yield ip.ipv4_mapped
        if ip.sixtofour is not None:
            yield ip.sixtofour
        if ip in _NAT64:
            yield ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def address_problem(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is allowed."""
    forms = list(_forms(ip))
    for form in forms:
        if any(form in net for net in _ALWAYS_BLOCKED if net.version == form.version):
            return "cloud metadata and link-local addresses are never allowed"
    if allow_private:
        return None
    for form in forms:
        if not form.is_global or form.is_multicast or form.is_unspecified:
            return (
                "private, loopback and reserved addresses are not allowed "
                "(set WEFT_HTTP_ALLOW_PRIVATE=true to allow them)"
            )
    return None


async def _system_resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def vet_host(
    host: str,
    port: int,
    *,
    allow_private: bool,
    resolve: HostResolver | None = None,
) -> list[str]:
    """Resolve ``host`` and return its addresses when every one of them is allowed.

    Raises BlockedAddressError when any address is refused (a name that resolves to one public
    and one private address is refused as a whole), httpcore.ConnectError when it does not
    resolve.
    """
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS:
        raise BlockedAddressError(host, "cloud metadata hosts are never allowed")
    try:
        literal: IPAddress | None = ipaddress.ip_address(name)
    except ValueError:
        literal = None
    if literal is not None:
        problem = address_problem(literal, allow_private=allow_private)
        if problem:
            raise BlockedAddressError(host, problem)
        return [str(literal)]
    try:
        answers = await (resolve or _system_resolve)(name, port)
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve host {host!r}: {exc}") from None
    addresses: list[str] = []
    for answer in answers:
        try:
            ip = ipaddress.ip_address(answer.split("%", 1)[0])
        except ValueError:
            raise BlockedAddressError(
                host, "it resolved to something that is not an IP address"
            ) from None
        problem = address_problem(ip, allow_private=allow_private)
        if problem:
            raise BlockedAddressError(host, problem)
        if answer not in addresses:
            addresses.append(answer)
    if not addresses:
        raise httpcore.ConnectError(f"host {host!r} has no addresses")
    return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to vetted addresses."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: HostResolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allow_private = allow_private
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        vetting = vet_host(host, port, allow_private=self.allow_private, resolve=self._resolve)
        try:
            addresses = await asyncio.wait_for(vetting, timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddressError("unix socket", "unix sockets are never allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with a connection pool whose every connection is vetted."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: HostResolver | None = None,
        limits: httpx.Limits | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        # No proxies from the environment: a proxy would make the guard vet the proxy, not the
        # destination.
        super().__init__(verify=verify, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            # SSL_CERT_FILE/SSL_CERT_DIR are honoured (custom CAs); only proxies are not.
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=True),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=GuardedNetworkBackend(allow_private=allow_private, resolve=resolve),
        )


_GUARDED: weakref.WeakSet[httpx.AsyncClient] = weakref.WeakSet()


def guarded_client(
    *,
    allow_private: bool,
    timeout_s: float = 30.0,
    resolve: HostResolver | None = None,
    limits: httpx.Limits | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An httpx client for user-directed requests: every connection goes through the guard.

    Build it once per process (or per event loop) and share it: ``ctx.services.http``.
    """
    client = httpx.AsyncClient(
        transport=GuardedTransport(
            allow_private=allow_private, resolve=resolve, limits=limits, verify=verify
        ),
        timeout=timeout_s,
        trust_env=False,
        follow_redirects=False,
    )
    _GUARDED.add(client)
    return client


def is_guarded(client: object) -> bool:
    """True for clients built by ``guarded_client``."""
    return isinstance(client, httpx.AsyncClient) and client in _GUARDED
