// Look-ups several pages share, each built on public routes only.

import { allPages, api } from "./api.js";
import { field, h, select } from "./ui.js";

/** The most chunks one retrieve returns (the gateway's default cap on top_k). */
export const MAX_CHUNKS = 500;

export function listIndexes() {
  return allPages("/api/v1/indexes");
}

/** Files in the index's source directory (the list route's total_size). */
export async function fileCount(index) {
  const page = await api("GET", `/api/v1/beta/directories/${encodeURIComponent(index.source_directory_id)}/files`, {
    query: { page_size: 1 },
  });
  return page.total_size ?? page.items.length;
}

/**
 * The chunks of an index, or of one parsed file of it, as the v2 retrieve returns them: the
 * dense leg alone (a nearest-neighbour search returns every chunk up to its limit, whatever
 * the query), no reranking, `MAX_CHUNKS` at most. The API has no chunk listing, so this is
 * how the console counts chunks and marks their boundaries in a file.
 */
export async function chunksOf(indexId, fileId) {
  const body = {
    index_id: indexId, query: "chunk", top_k: MAX_CHUNKS, num_candidates: MAX_CHUNKS,
    vector_pipeline_weight: 1, full_text_pipeline_weight: 0, rerank: { enabled: false },
  };
  if (fileId) body.static_filters = { parsed_directory_file_id: { operator: "eq", value: fileId } };
  const answer = await api("POST", "/api/v1/retrieval/retrieve", { json: body });
  return answer.results;
}

/** A labelled <select> of the project's indexes; resolves once the list is in. */
export async function indexPicker(selected, label = "Index") {
  const items = await listIndexes();
  const control = select(
    items.map((i) => [i.id, i.name || i.id]),
    selected && items.some((i) => i.id === selected) ? selected : items[0]?.id,
    { name: "index", required: true },
  );
  if (!items.length) control.append(h("option", { value: "" }, "no index yet: create one under Indexes"));
  return { control, wrap: field(label, control), items };
}
