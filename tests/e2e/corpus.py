"""The corpus the SDK e2e suites ingest (five text files and a PDF, each with metadata), and the
helpers they share."""

from __future__ import annotations

import io
import json
import time
from typing import Any

from llama_cloud import LlamaCloud

from tests.fixtures.ingest.pdf_builder import build_pdf

HISTORY = "\n\n".join(
    f"Chapter {i}. The lighthouse keepers of the northern coast kept a log of every storm. "
    f"In year {1850 + i} the keeper recorded waves taller than the tower and a ship named Aurora {i} "
    "that anchored in the bay until the wind turned. The log mentions lamp oil, fog bells and the "
    "long winter nights when supply boats could not reach the island."
    for i in range(1, 13)
)

DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "solar.md": (
        "# Solar power\n\nPhotovoltaic solar panels convert sunlight directly into electricity. "
        "Silicon cells release electrons when photons hit them, and an inverter turns the direct "
        "current into alternating current for the grid.",
        {"year": 2021, "author": "Ada", "topic": "energy", "draft": False},
    ),
    "volcano.txt": (
        "Volcanoes form where magma from the mantle reaches the surface. Eruptions release ash, "
        "lava and gases; the 1991 eruption of Mount Pinatubo cooled the planet for two years.",
        {"year": 2022, "author": "Brian", "topic": "geology", "draft": True},
    ),
    "baking.html": (
        "<html><body><h1>Sourdough</h1><p>Sourdough bread rises with a starter of wild yeast and "
        "lactic acid bacteria. Bakers feed the starter with flour and water and bake the loaf in a "
        "very hot Dutch oven.</p><script>ignored()</script></body></html>",
        {"year": 2023, "author": "Chen", "topic": "food", "draft": False},
    ),
    "rust.md": (
        "# Rust ownership\n\nThe Rust programming language checks memory safety at compile time. "
        "The borrow checker enforces that a value has one owner and that references never outlive it.",
        {"year": 2024, "author": "Ada", "topic": "software", "draft": False},
    ),
    "lighthouse-history.txt": (HISTORY, {"year": 2020, "author": "Eve", "topic": "history", "draft": True}),
}


REPORT_PDF = build_pdf([
    ["Glacier survey report.", "Page one covers the expedition and its route."],
    ["Page two: the glacier retreated forty metres since the last survey.", "Meltwater lakes doubled."],
    ["Page three lists the equipment: ice axes, crampons and a GPS receiver."],
])
PDF_METADATA = {"year": 2019, "author": "Ola", "topic": "survey", "draft": False}


def wait_synced(client: LlamaCloud, index_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        index = client.indexes.get(index_id, expand=["sync_in_progress"])
        if index.sync_in_progress is False and (index.model_extra or {}).get("sync_status") == "succeeded":
            return index
        assert (index.model_extra or {}).get("sync_status") != "failed", index
        time.sleep(0.3)
    raise AssertionError("sync did not finish")


def ingest_corpus(client: LlamaCloud, name: str = "e2e-corpus") -> Any:
    """Upload ``DOCS`` and the PDF with their metadata into a new directory, index it, wait for the sync."""
    directory = client.beta.directories.create(name=name)
    for file_name, (text, meta) in DOCS.items():
        client.beta.directories.files.upload(
            directory.id, upload_file=(file_name, io.BytesIO(text.encode())), metadata=json.dumps(meta)
        )
    client.beta.directories.files.upload(
        directory.id, upload_file=("glacier-report.pdf", io.BytesIO(REPORT_PDF), "application/pdf"),
        metadata=json.dumps(PDF_METADATA),
    )
    listed = list(client.beta.directories.files.list(directory.id))
    assert sorted(f.display_name for f in listed) == sorted([*DOCS, "glacier-report.pdf"])
    created = client.indexes.create(source_directory_id=directory.id, name=f"{name}-index")
    client.indexes.sync(created.id)
    return wait_synced(client, created.id)


def names(results: Any, file_ids: dict[str, str]) -> list[str]:
    by_id = {v: k for k, v in file_ids.items()}
    return [by_id[r.static_fields.parsed_directory_file_id] for r in results]
