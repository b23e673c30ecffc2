"""Page screenshots: real PDFs rendered to PNG with pdfium, and the size-capped batching."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from services.ingest.screenshots import PageImage, PdfPageRenderer, batch_by_size
from tests.fixtures.ingest.pdf_builder import build_pdf

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: pdf_builder's MediaBox: US Letter in points.
PAGE_POINTS = (612, 792)


def image(index: int, size: int) -> PageImage:
    return PageImage(index, b"x" * size, 1, 1)


def sizes(batches: Iterator[list[PageImage]]) -> list[list[int]]:
    return [[i.size for i in batch] for batch in batches]


def test_batches_stay_within_the_byte_limit_in_page_order() -> None:
    images = [image(i, s) for i, s in enumerate([40, 30, 30, 50, 10, 100, 5])]
    batches = list(batch_by_size(images, 100))
    assert [[i.size for i in b] for b in batches] == [[40, 30, 30], [50, 10], [100], [5]]
    assert [i.page_index for b in batches for i in b] == list(range(7))


def test_an_image_over_the_limit_travels_alone() -> None:
    assert sizes(batch_by_size([image(0, 10), image(1, 500), image(2, 10)], 100)) == [[10], [500], [10]]


def test_no_images_give_no_batch() -> None:
    assert list(batch_by_size([], 100)) == []
    with pytest.raises(ValueError, match="max_bytes"):
        list(batch_by_size([image(0, 1)], 0))


def test_batching_is_lazy() -> None:
    pulled: list[int] = []

    def produce() -> Iterator[PageImage]:
        for i in range(10):
            pulled.append(i)
            yield image(i, 60)

    first = next(batch_by_size(produce(), 100))
    assert [i.page_index for i in first] == [0]
    # The first batch was closed by the second image, which did not fit; nothing more was rendered.
    assert pulled == [0, 1]


@pytest.mark.parametrize("scale", [1.0, 0.5, 1.5])
def test_a_real_pdf_renders_to_png_at_the_page_size_times_the_scale(scale: float) -> None:
    pdf = build_pdf([["Page one of the screenshot test."], None, ["Page three."]])
    renderer = PdfPageRenderer(pdf, scale)
    try:
        assert renderer.page_count == 3
        images = list(renderer.render_all(10))
    finally:
        renderer.close()
    assert [i.page_index for i in images] == [0, 1, 2]
    expected = (round(PAGE_POINTS[0] * scale), round(PAGE_POINTS[1] * scale))
    for rendered in images:
        assert rendered.content.startswith(PNG_SIGNATURE)
        assert (rendered.width, rendered.height) == expected
        decoded = Image.open(io.BytesIO(rendered.content))
        decoded.load()
        assert decoded.format == "PNG" and decoded.size == expected
    # The pages differ, and the one without text (a grey rectangle, like a scan) is drawn too.
    assert len({i.content for i in images}) == 3
    scan = Image.open(io.BytesIO(images[1].content)).convert("L")
    assert scan.getextrema()[0] < 200


def test_render_all_stops_at_the_limit() -> None:
    renderer = PdfPageRenderer(build_pdf([["a"], ["b"], ["c"], ["d"]]), 0.25)
    try:
        assert [i.page_index for i in renderer.render_all(2)] == [0, 1]
        assert [i.page_index for i in renderer.render_all(0)] == []
    finally:
        renderer.close()


def test_a_closed_renderer_refuses_to_render() -> None:
    renderer = PdfPageRenderer(build_pdf([["a"]]), 1.0)
    renderer.close()
    renderer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render(0)
