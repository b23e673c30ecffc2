// Read one parsed file with its chunk boundaries marked, scrolled to a chunk or a grep match.

import { api, message, showError } from "./api.js";
import { MAX_CHUNKS, chunksOf } from "./data.js";
import { fill, h, link, params } from "./ui.js";

export const title = "Read";

const MAX_CHARS = 1_000_000;

export async function render(main) {
  const q = params();
  if (!q.index || !q.file) {
    main.append(h("h1", {}, "Read a file"), h("p", {}, "Open a file from ", link("files", {}, "Files"), " or from a playground result."));
    return;
  }
  const heading = h("h1", {}, q.name || q.file);
  const info = h("p", { class: "muted", id: "read-info" }, "Loading…");
  const doc = h("pre", { class: "doc", id: "doc", tabindex: 0, "aria-label": `Text of ${q.name || q.file}` });
  main.append(
    h("p", { class: "crumbs" }, link("files", { index: q.index }, "← Files of the index")),
    heading, info,
    h("p", { class: "legend small" },
      h("span", { class: "boundary" }, "chunk n"), " starts a chunk; shading alternates per chunk, ",
      h("span", { class: "overlap-sample" }, "darker"), " text belongs to two chunks (their overlap), ",
      h("mark", {}, q.match ? "the match" : "the chunk"), " is the one you opened."),
    doc);

  const start = q.start !== undefined ? Number(q.start) : null;
  const end = q.end !== undefined ? Number(q.end) : null;
  let text;
  try {
    text = (await api("POST", "/api/v1/retrieval/files/read", {
      json: { index_id: q.index, file_id: q.file, offset: 0, max_length: MAX_CHARS },
    })).content;
  } catch (e) {
    showError(e, "Reading the file");
    info.textContent = "";
    return;
  }
  let chunks = [];
  let note = "";
  try {
    chunks = (await chunksOf(q.index, q.file))
      .map((r) => ({ index: r.static_fields.chunk_index, start: r.static_fields.chunk_start_char, end: r.static_fields.chunk_end_char }))
      .sort((a, b) => a.start - b.start);
    if (chunks.length >= MAX_CHUNKS) note = ` (the first ${MAX_CHUNKS} marked)`;
  } catch (e) {
    note = ` (boundaries unavailable: ${message(e)})`;
  }
  info.textContent = `${text.length.toLocaleString()} characters${text.length >= MAX_CHARS ? " (the first part)" : ""} · `
    + `${chunks.length} chunk${chunks.length === 1 ? "" : "s"}${note}`;
  fill(doc, segments(text, chunks, start, end));
  const target = doc.querySelector("mark");
  if (target) {
    target.id = "target";
    target.scrollIntoView({ block: "center" });
  }
}

/** The text cut at every chunk start and end and at the target, each piece classed by what covers it. */
function segments(text, chunks, start, end) {
  const cuts = new Set([0, text.length]);
  for (const c of chunks) {
    cuts.add(Math.min(c.start, text.length));
    cuts.add(Math.min(c.end, text.length));
  }
  const hasTarget = start !== null && end !== null && end > start;
  if (hasTarget) {
    cuts.add(start);
    cuts.add(end);
  }
  const points = [...cuts].sort((a, b) => a - b);
  const starts = new Map(chunks.map((c) => [c.start, c]));
  const out = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const [a, b] = [points[i], points[i + 1]];
    const chunk = starts.get(a);
    if (chunk) out.push(h("span", { class: "boundary", dataset: { chunk: chunk.index } }, `chunk ${chunk.index}`));
    const covering = chunks.filter((c) => c.start <= a && c.end >= b);
    const last = covering[covering.length - 1];
    const cls = [last ? (last.index % 2 ? "c-odd" : "c-even") : "", covering.length > 1 ? "overlap" : ""].join(" ").trim();
    const piece = text.slice(a, b);
    const inTarget = hasTarget && a >= start && b <= end;
    const span = cls || inTarget ? h("span", { class: cls || "plain" }, piece) : document.createTextNode(piece);
    out.push(inTarget ? h("mark", {}, span) : span);
  }
  return out;
}
