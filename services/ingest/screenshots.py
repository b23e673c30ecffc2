"""Page screenshots: a PDF's pages rendered to PNG one at a time, and packed into size-capped batches.

Rendering is CPU work and pdfium is not thread-safe: callers run these functions in a worker
thread (``asyncio.to_thread``), and every pdfium call holds ``PDFIUM_LOCK``. Only one page's
bitmap exists at a time, and the worker holds at most one batch of PNGs, so memory does not grow
with the page count.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pypdfium2 as pdfium

from services.ingest.parsing import PDFIUM_LOCK

log = logging.getLogger(__name__)

PNG_CONTENT_TYPE = "image/png"


@dataclass(frozen=True, slots=True)
class PageImage:
    """One rendered page: the 0-based ``page_index`` and its PNG bytes."""

    page_index: int
    content: bytes
    width: int
    height: int

    @property
    def size(self) -> int:
        return len(self.content)


class PdfPageRenderer:
    """A PDF kept open while its pages are rendered one at a time; ``close`` releases it.

    Safe to call from any thread: each method holds ``PDFIUM_LOCK``.
    """

    def __init__(self, content: bytes, scale: float) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self._scale = scale
        with PDFIUM_LOCK:
            self._document: pdfium.PdfDocument | None = pdfium.PdfDocument(content)
            self.page_count = len(self._document)

    def render(self, page_index: int) -> PageImage:
        """The page as PNG; raises ``pdfium.PdfiumError`` for a page pdfium cannot draw."""
        with PDFIUM_LOCK:
            if self._document is None:
                raise RuntimeError("the renderer is closed")
            page = self._document[page_index]
            try:
                bitmap = page.render(scale=self._scale)
            finally:
                page.close()
            try:
                # The PIL image may share the bitmap's memory: encode before the bitmap is freed.
                image = bitmap.to_pil()
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
            finally:
                bitmap.close()
        return PageImage(page_index, buffer.getvalue(), image.width, image.height)

    def render_all(self, count: int) -> Iterator[PageImage]:
        """Pages ``0 .. count-1`` rendered lazily, skipping (and logging) any pdfium cannot draw."""
        for index in range(min(count, self.page_count)):
            try:
                yield self.render(index)
            except pdfium.PdfiumError as exc:
                log.warning("page %d could not be rendered: %s", index + 1, exc)

    def close(self) -> None:
        with PDFIUM_LOCK:
            if self._document is not None:
                self._document.close()
                self._document = None


def batch_by_size(images: Iterable[PageImage], max_bytes: int) -> Iterator[list[PageImage]]:
    """Consecutive images grouped so that each group's PNG bytes stay within ``max_bytes``.

    Lazy: a group is yielded as soon as the next image would not fit, so only one group is held.
    An image larger than ``max_bytes`` on its own travels alone. Never yields an empty group.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    batch: list[PageImage] = []
    size = 0
    for image in images:
        if batch and size + image.size > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(image)
        size += image.size
    if batch:
        yield batch
