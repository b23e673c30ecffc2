// The search playground: every knob of both retrieve APIs, the results with their scores side
// by side, page screenshots, per-stage latency, the degraded reason, and the query as code.

import { api, blobUrl, notify, showError } from "./api.js";
import { indexPicker } from "./data.js";
import { filterEditor } from "./filters.js";
import * as snippets from "./snippets.js";
import { bar, field, fill, h, link, ms, params, plain, score, section, select } from "./ui.js";

export const title = "Playground";

const MODES = ["chunks", "files_via_content", "files_via_metadata", "auto_routed"];
let images = [];

export function leave() {
  images.forEach((u) => URL.revokeObjectURL(u));
  images = [];
}

export async function render(main) {
  const results = h("div", { class: "results", id: "results", "aria-live": "polite" },
    h("p", { class: "muted" }, "Run a query to see results."));
  const form = h("form", { class: "card playground-form", id: "playground-form", "aria-label": "Query settings" });
  const side = h("div", { class: "pg-out" });
  main.append(h("h1", {}, "Playground"), h("div", { class: "pg" }, form, side));

  let picker;
  try {
    picker = await indexPicker(params().index);
  } catch (e) {
    showError(e, "Listing the indexes");
    return;
  }
  const c = controls(picker.control);
  form.append(...c.fields);
  side.append(c.snippet, results);
  c.apiSelect.addEventListener("change", () => c.sync());
  c.mode.addEventListener("change", () => c.sync());
  c.sync();

  // Only the latest run is shown (an earlier one may answer later); data-run counts them.
  let runs = 0;
  const run = async () => {
    const request = c.request();
    if (!request) return;
    const mine = ++runs;
    results.setAttribute("aria-busy", "true");
    try {
      const answer = await api("POST", request.path, { json: request.body });
      if (mine === runs) show(results, request, answer);
    } catch (e) {
      if (mine !== runs) return;
      showError(e, "The query");
      fill(results, h("p", { class: "form-error" }, "No results: the query failed (the error is above)."));
    } finally {
      if (mine === runs) {
        results.dataset.run = String(mine);
        results.removeAttribute("aria-busy");
      }
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  // Moving the weight (or another knob) re-runs a query already shown.
  for (const el of [c.weight, c.fusion, c.rerank, c.topN, c.topK]) {
    el.addEventListener("change", () => results.dataset.shown && run());
  }
  c.copyCurl.addEventListener("click", () => copy(c, "curl"));
  c.copyPython.addEventListener("click", () => copy(c, "python"));
}

function controls(indexSelect) {
  const query = h("textarea", { rows: 2, name: "query", required: true, maxlength: 8192, placeholder: "What are you looking for?" });
  const apiSelect = select([["v2", "v2: POST /api/v1/retrieval/retrieve"], ["pipelines", "pipelines: POST /api/v1/pipelines/{id}/retrieve"]], "v2", { name: "api" });
  const mode = select(MODES.map((m) => [m, m]), "chunks", { name: "retrieval_mode" });
  const filesTopK = h("input", { type: "number", name: "files_top_k", min: 1, max: 100, value: 1 });
  const topK = h("input", { type: "number", name: "top_k", min: 1, max: 500, value: 10 });
  const weight = h("input", { type: "range", name: "weight", min: 0, max: 1, step: 0.05, value: 0.5 });
  const weightOut = h("output", { for: "", class: "weights" });
  const fusion = select([["", "server default (dbsf)"], ["dbsf", "dbsf"], ["relative_score", "relative_score"], ["rrf", "rrf"]], "", { name: "fusion" });
  const rerank = h("input", { type: "checkbox", name: "rerank", checked: true });
  const topN = h("input", { type: "number", name: "top_n", min: 1, max: 500, placeholder: "top_k" });
  const filters = filterEditor();
  const submit = h("button", { type: "submit", class: "primary" }, "Search");
  const copyCurl = h("button", { type: "button", "aria-label": "Copy as curl" }, "curl");
  const copyPython = h("button", { type: "button", "aria-label": "Copy as Python SDK" }, "Python SDK");
  const snippet = h("pre", { class: "snippet", id: "snippet", hidden: true, tabindex: 0, "aria-label": "Query as code" });

  const weightField = field("Dense ↔ sparse weight", weight, "Left: keywords only (BM25); right: meaning only (dense).");
  weightField.insertBefore(weightOut, weightField.querySelector("small"));
  weightOut.setAttribute("for", weight.id);
  const showWeights = () => {
    const w = Number(weight.value);
    const text = `dense ${w.toFixed(2)} · sparse ${(1 - w).toFixed(2)}`;
    weightOut.textContent = text;
    weight.setAttribute("aria-valuetext", text);
  };
  weight.addEventListener("input", showWeights);
  showWeights();

  const modeField = field("Retrieval mode", mode, "Pipelines API only; files_* return whole files.");
  const filesTopKField = field("Files (files_top_k)", filesTopK);
  const fusionField = field("Fusion", fusion, "v2 only (a Quarry extension field).");

  const c = {
    query, apiSelect, mode, topK, weight, fusion, rerank, topN, submit, copyCurl, copyPython, snippet,
    fields: [
      field("Index", indexSelect),
      field("Query", query),
      field("API", apiSelect),
      modeField,
      filesTopKField,
      h("div", { class: "row" }, field("Top k", topK), field("Rerank top n", topN)),
      weightField,
      fusionField,
      field("Rerank the fused candidates", rerank),
      filters.el,
      h("div", { class: "buttons" }, submit, h("span", { class: "copy-as" }, "Copy as"), copyCurl, copyPython),
    ],
    /** Show the knobs of the API in use. */
    sync() {
      const pipelines = apiSelect.value === "pipelines";
      modeField.hidden = !pipelines;
      filesTopKField.hidden = !pipelines || !mode.value.startsWith("files_");
      fusionField.hidden = pipelines;
      filters.setApi(apiSelect.value);
    },
    /** The request the form describes: the API, path and body (null when it cannot be built). */
    request() {
      const indexId = indexSelect.value;
      if (!indexId) {
        notify("Create an index first (Indexes).");
        return null;
      }
      if (!query.value.trim()) {
        query.focus();
        return null;
      }
      let compiled;
      try {
        compiled = filters.compile();
      } catch (e) {
        notify(`A filter value is not valid JSON: ${e.message}`);
        return null;
      }
      const w = Number(Number(weight.value).toFixed(2));
      const k = Number(topK.value) || undefined;
      const n = Number(topN.value) || undefined;
      if (apiSelect.value === "pipelines") {
        return {
          api: "pipelines", indexId, path: `/api/v1/pipelines/${encodeURIComponent(indexId)}/retrieve`,
          body: {
            query: query.value, dense_similarity_top_k: k, alpha: w, enable_reranking: rerank.checked,
            rerank_top_n: rerank.checked ? n : undefined, search_filters: compiled, retrieval_mode: mode.value,
            files_top_k: mode.value.startsWith("files_") ? Number(filesTopK.value) || 1 : undefined,
            retrieve_page_screenshot_nodes: true,
          },
        };
      }
      return {
        api: "v2", indexId, path: "/api/v1/retrieval/retrieve",
        body: {
          index_id: indexId, query: query.value, top_k: k, vector_pipeline_weight: w,
          full_text_pipeline_weight: Number((1 - w).toFixed(2)),
          rerank: { enabled: rerank.checked, ...(rerank.checked && n ? { top_n: n } : {}) },
          custom_filters: compiled, fusion: fusion.value || undefined,
        },
      };
    },
  };
  return c;
}

async function copy(c, kind) {
  const request = c.request();
  if (!request) return;
  const text = kind === "curl" ? snippets.curl(location.origin, request) : snippets.python(location.origin, request);
  c.snippet.textContent = text;
  c.snippet.hidden = false;
  c.snippet.dataset.kind = kind;
  try {
    await navigator.clipboard.writeText(text);
    notify(`Copied the query as ${kind === "curl" ? "curl" : "Python"} to the clipboard.`, "info");
  } catch {
    notify("The clipboard is not available here: copy the text below the buttons.", "info");
  }
}

// ---- results -----------------------------------------------------------------------------------

/** Both APIs' answers in one shape. */
function normalize(request, answer) {
  if (request.api === "pipelines") {
    const meta = answer.metadata || {};
    return {
      latency: answer.retrieval_latency || {},
      degraded: meta.degraded ? [meta.degraded] : [],
      notes: Object.entries(meta).filter(([k]) => k !== "degraded").map(([k, v]) => `${k}: ${v}`),
      cached: meta.cached === "true",
      screenshots: (answer.image_nodes || []).map((n) => ({ fileId: n.node.file_id, page: n.node.page_index,
        name: n.node.metadata?.file_name })),
      results: answer.retrieval_nodes.map((r) => {
        const src = r.node.relationships?.["1"]?.metadata || {};
        return {
          content: r.node.text, metadata: r.node.extra_info, fileId: src.file_id, fileName: src.file_name,
          start: r.node.start_char_idx, end: r.node.end_char_idx, score: r.score, thumbs: [],
        };
      }),
    };
  }
  return {
    latency: answer.latency || {},
    degraded: answer.degraded || [],
    notes: [],
    cached: answer.cached,
    screenshots: [],
    results: answer.results.map((r) => {
      const s = r.static_fields || {};
      return {
        content: r.content, metadata: r.metadata, fileId: s.parsed_directory_file_id, fileName: r.file_name,
        pageStart: s.page_range_start, pageEnd: s.page_range_end, start: s.chunk_start_char, end: s.chunk_end_char,
        chunkIndex: s.chunk_index, score: r.score, dense: r.dense_score, sparse: r.sparse_score, rerank: r.rerank_score,
        thumbs: (s.attachments || []).map((a) => ({ fileId: a.source_id, page: Number(a.attachment_name.match(/\d+/)[0]),
          name: r.file_name })),
      };
    }),
  };
}

function show(results, request, answer) {
  leave();
  const a = normalize(request, answer);
  results.dataset.shown = "1";
  fill(results,
    h("p", { class: "summary", id: "summary" },
      `${a.results.length} result${a.results.length === 1 ? "" : "s"}`,
      a.latency.total !== undefined ? ` in ${ms(a.latency.total)}` : "",
      a.cached ? " · from the cache" : "",
      ` · ${request.api === "pipelines" ? "pipelines API" : "v2 API"}`),
    a.degraded.length ? h("p", { class: "degraded", role: "status", id: "degraded" }, `Degraded: ${a.degraded.join("; ")}`) : null,
    a.notes.length ? h("ul", { class: "notes small" }, a.notes.map((n) => h("li", {}, n))) : null,
    latency(a.latency),
    a.screenshots.length ? section("Page screenshots", h("div", { class: "thumbs" }, a.screenshots.map(thumb))) : null,
    h("ol", { class: "result-list" }, a.results.map((r, i) => card(request, r, i))),
  );
}

function latency(stages) {
  const entries = Object.entries(stages);
  if (!entries.length) return null;
  const total = stages.total || Math.max(...entries.map(([, v]) => v));
  return h("figure", { class: "latency", id: "latency" },
    h("figcaption", {}, "Latency per stage"),
    h("dl", {}, entries.flatMap(([stage, s]) => [
      h("dt", {}, stage),
      h("dd", {}, bar(total ? s / total : 0, `${stage}: ${ms(s)}`, stage === "total" ? "total" : ""), h("span", { class: "small" }, ms(s))),
    ])));
}

function thumb(t) {
  const img = h("img", { alt: `Page ${t.page + 1} of ${t.name || t.fileId}`, loading: "lazy", width: 120 });
  blobUrl(`/api/v1/files/${encodeURIComponent(t.fileId)}/page_screenshots/${t.page}`)
    .then((u) => {
      images.push(u);
      img.src = u;
    })
    .catch(() => img.replaceWith(h("span", { class: "muted small" }, `page ${t.page + 1}: no screenshot`)));
  return h("figure", { class: "thumb" }, img, h("figcaption", { class: "small" }, `p. ${t.page + 1}`));
}

function card(request, r, i) {
  const pages = r.pageStart ? ` · p. ${r.pageStart}${r.pageEnd && r.pageEnd !== r.pageStart ? `–${r.pageEnd}` : ""}` : "";
  const open = r.fileId
    ? link("read", { index: request.indexId, file: r.fileId, name: r.fileName, start: r.start, end: r.end },
      "Open in file", { class: "open-chunk", "aria-label": `Open ${r.fileName || r.fileId} at this chunk` })
    : null;
  const meta = Object.entries(r.metadata || {});
  return h("li", { class: "card result", dataset: { file: r.fileName || "" } },
    h("div", { class: "result-head" },
      h("span", { class: "rank" }, `#${i + 1}`),
      h("strong", { class: "file-name" }, r.fileName || r.fileId || "?"),
      h("span", { class: "muted small" }, `${r.chunkIndex !== undefined ? `chunk ${r.chunkIndex}` : ""}${pages}`),
      open),
    h("table", { class: "scores" },
      h("thead", {}, h("tr", {}, ["final", "dense", "sparse", "rerank"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, h("tr", {}, [r.score, r.dense, r.sparse, r.rerank].map((x) => h("td", {}, score(x)))))),
    h("p", { class: "content" }, r.content),
    meta.length ? h("dl", { class: "meta" }, meta.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, plain(v))])) : null,
    r.thumbs.length ? h("div", { class: "thumbs" }, r.thumbs.map(thumb)) : null,
  );
}
