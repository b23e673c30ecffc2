"""Opaque page tokens: URL-safe base64 of a small JSON value (the last sort key or an offset)."""

from __future__ import annotations

import base64
import binascii
import json

from services.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int, default: int = DEFAULT_PAGE_SIZE) -> int:
    """0 -> the default; above the cap -> coerced to the cap; negative -> INVALID_ARGUMENT."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative")
    if requested == 0:
        return default
    return min(requested, MAX_PAGE_SIZE)


def _encode(value: object) -> str:
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> object:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument("invalid page_token") from exc


def encode_cursor(key: tuple[str, str]) -> str:
    """Token for a keyset cursor (the last item's sort key)."""
    return _encode(list(key))


def decode_cursor(token: str) -> tuple[str, str] | None:
    """The sort key in ``token``; None for an empty token."""
    if not token:
        return None
    value = _decode(token)
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise InvalidArgument("invalid page_token")
    return value[0], value[1]


def encode_offset(offset: int) -> str:
    """Token for an offset into a computed result list (grep matches)."""
    return _encode({"o": offset})


def decode_offset(token: str) -> int:
    """The offset in ``token``; 0 for an empty token."""
    if not token:
        return 0
    value = _decode(token)
    if not (isinstance(value, dict) and isinstance(value.get("o"), int) and value["o"] >= 0):
        raise InvalidArgument("invalid page_token")
    return int(value["o"])
