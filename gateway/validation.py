"""Input checks that apply to every route: lone UTF-16 surrogates.

JSON may spell a lone surrogate (``"\\ud800"``); Python decodes it into a ``str`` that cannot be
encoded as UTF-8, so it would fail later, in a protobuf message or a database driver, as a 500.
Pydantic refuses it in fields typed ``str``, but not in the keys of an open ``dict`` or in values
typed ``Any`` (metadata, filter keys). ``RejectSurrogates`` checks every JSON request body once,
before routing: only a body whose bytes contain a ``\\uD800``-``\\uDFFF`` escape is parsed, and
the answer is a 422 whose ``loc`` names the key or value. JSON carried inside a form field (the
upload's ``metadata``) goes through ``surrogate_location`` where it is parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import field_error

#: A JSON escape of a surrogate code point, the only way one reaches a decoded body.
_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_MESSAGE = "must be valid Unicode: a lone UTF-16 surrogate cannot be stored"


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def surrogate_location(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The location of the first key or string value holding a lone surrogate, or ``None``."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, loc)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, str):
            if _has_surrogate(current):
                return where
        elif isinstance(current, dict):
            for key, item in current.items():
                if isinstance(key, str) and _has_surrogate(key):
                    return (*where, key.encode("utf-8", "backslashreplace").decode())
                stack.append((item, (*where, key)))
        elif isinstance(current, list):
            stack.extend((item, (*where, i)) for i, item in enumerate(current))
    return None


def problem(loc: tuple[str | int, ...]) -> dict[str, Any]:
    """The 422 ``detail`` entry for a surrogate at ``loc``."""
    return {"loc": list(loc), "msg": _MESSAGE, "type": "string_unicode"}


class RejectSurrogates:
    """Pure ASGI middleware: a JSON body with a lone surrogate anywhere gets a 422 naming it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body, messages = await _read(receive)
        if _ESCAPE.search(body):
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                parsed = None  # FastAPI answers a body that is not JSON itself
            where = surrogate_location(parsed, ("body",)) if parsed is not None else None
            if where is not None:
                response = field_error(where, _MESSAGE, "string_unicode")
                await response(scope, receive, send)
                return
        replay = iter(messages)
        await self.app(scope, _replaying(replay, receive), send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


async def _read(receive: Receive) -> tuple[bytes, list[Message]]:
    chunks, messages = [], []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


def _replaying(messages: Iterator[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        for message in messages:
            return message
        return await receive()

    return replay
