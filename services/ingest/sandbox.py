"""Parsing in child processes that a hostile file cannot hang or exhaust.

A thread cannot be stopped, and a PDF that inflates to hundreds of megabytes, or one whose text
extraction never ends, would hold the ingest worker (and its lease) forever. Files are parsed in a
pool of processes (``pebble``): each parse has a deadline past which its process is killed and
replaced, and each process runs under an address-space cap (``RLIMIT_AS``), so a decompression
bomb fails that one file with ``MemoryError`` or a dead process instead of the worker. Processes
are started with ``forkserver`` (never forked from the worker, whose gRPC threads do not survive
a fork) and replaced after ``MAX_TASKS`` files, so one that leaked memory does not live on.

Every failure is a ``ParseError`` naming the limit, which the worker records as the file's error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import resource
from typing import Any

import pebble

from services.ingest.parsing import ParsedDocument, ParseError, ParseLimits, check_size, parse

log = logging.getLogger(__name__)

#: Files a process parses before it is replaced.
MAX_TASKS = 200


def _limit_memory(memory_bytes: int) -> None:
    """Pool initializer: cap this process's address space."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def _parse_in_child(content: bytes, file_name: str, content_type: str, limits: ParseLimits) -> ParsedDocument:
    try:
        return parse(content, file_name, content_type, limits)
    except MemoryError:
        raise ParseError(f"the file needs more than the {limits.memory_mb} MB memory limit to parse") from None
    except RecursionError:
        raise ParseError("the file is nested too deeply to parse") from None


class ParseSandbox:
    """A pool of ``workers`` parsing processes under ``limits``; ``close()`` stops them."""

    def __init__(self, limits: ParseLimits, workers: int = 2) -> None:
        self.limits = limits
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["services.ingest.parsing"])
        self._pool = pebble.ProcessPool(
            max_workers=workers, max_tasks=MAX_TASKS, initializer=_limit_memory,
            initargs=(limits.memory_mb * 1024 * 1024,), context=context,
        )

    async def parse(self, content: bytes, file_name: str, content_type: str) -> ParsedDocument:
        """Parse in a child process under the limits (raises ``ParseError`` naming the one exceeded)."""
        limits = self.limits
        check_size(content, limits)  # refused before it is copied to a child
        future: concurrent.futures.Future[Any] = self._pool.schedule(
            _parse_in_child, args=(content, file_name, content_type, limits), timeout=limits.timeout_seconds
        )
        try:
            return await asyncio.wrap_future(future)  # type: ignore[no-any-return]
        except concurrent.futures.TimeoutError:
            raise ParseError(f"parse time limit ({limits.timeout_seconds:g} s) exceeded") from None
        except pebble.ProcessExpired as exc:
            raise ParseError(f"the parser process died (exit code {exc.exitcode}): the file exceeds the "
                             f"{limits.memory_mb} MB memory limit or crashed the PDF library") from None

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)
