"""Bearer-token authentication and the identity (``owner``) each token stands for.

``WEFT_API_TOKENS`` is a comma list; an entry ``name:secret`` gives the token the readable
identity ``name``, a bare secret gets ``token-<sha256 prefix>`` (so the secret itself is never
stored by the services). Without tokens the API is open, which is allowed only when the gateway
is bound to loopback in embedded mode.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from weft_common.errors import Unauthenticated

__all__ = ["ExposureError", "TokenAuth", "is_loopback_host"]

# The owner of everything created through an open (token-less) embedded gateway.
OPEN_OWNER = ""


class ExposureError(RuntimeError):
    """The gateway would serve an open API beyond loopback: refuse to start."""


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenAuth:
    """Maps the sha256 of each accepted token to its owner identity."""

    owners: dict[bytes, str]

    @classmethod
    def from_config(cls, tokens: str, *, host: str, embedded: bool) -> TokenAuth:
        owners: dict[bytes, str] = {}
        for entry in (t.strip() for t in tokens.split(",")):
            if not entry:
                continue
            name, sep, secret = entry.partition(":")
            if not sep:
                name, secret = "", entry
            if not secret:
                raise ExposureError(f"WEFT_API_TOKENS entry {name!r} has an empty token")
            digest = _digest(secret)
            owners[digest] = name.strip() or f"token-{digest.hex()[:16]}"
        if not owners and not (embedded and is_loopback_host(host)):
            where = "embedded mode" if embedded else "non-embedded mode"
            raise ExposureError(
                f"refusing to serve an open API on {host} in {where}: set WEFT_API_TOKENS "
                "(comma list of bearer tokens), or run embedded (`weft up`) bound to 127.0.0.1"
            )
        return cls(owners=owners)

    @property
    def open(self) -> bool:
        return not self.owners

    def owner_of(self, authorization: str | None, query_token: str | None = None) -> str:
        """The owner a request acts as; raises Unauthenticated (401) without a valid token.

        ``query_token`` (``?access_token=``) exists for browsers' ``EventSource``, which cannot
        send headers.
        """
        if self.open:
            return OPEN_OWNER
        secret = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                secret = value.strip()
        if secret is None:
            secret = query_token
        if not secret:
            raise Unauthenticated("missing bearer token: send 'Authorization: Bearer <token>'")
        # Looked up by digest: comparing hashes leaks nothing useful about the secret.
        owner = self.owners.get(_digest(secret))
        if owner is None:
            raise Unauthenticated("invalid bearer token")
        return owner
