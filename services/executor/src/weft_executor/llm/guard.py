"""Where an ``llm`` call may go: the same rules as ``http`` nodes (SPEC section 7).

Cloud metadata addresses are always refused; loopback and private addresses only when the
operator allows them (``WEFT_HTTP_ALLOW_PRIVATE``, on by default in embedded mode).
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_destination"]


def check_destination(ctx: Any, url: str) -> None:
    """Raise ``NodeFailure`` when ``url`` is a destination this node may not call."""
    # Wired to weft_executor.netguard once it lands (see docs/llm.md).
    return None
