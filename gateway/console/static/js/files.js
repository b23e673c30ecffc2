// Files of an index: find by name, grep (RE2) across the files found with the matches
// highlighted in their context, and a way into each file.

import { api, showError } from "./api.js";
import { indexPicker } from "./data.js";
import { field, fill, h, link, params, section } from "./ui.js";

export const title = "Files";

const GREP_PARALLEL = 4;

export async function render(main) {
  const q = params();
  const found = h("div", { id: "found" });
  const matches = h("div", { id: "matches", "aria-live": "polite" });
  main.append(h("h1", {}, "Files"));
  let picker;
  try {
    picker = await indexPicker(q.index);
  } catch (e) {
    showError(e, "Listing the indexes");
    return;
  }
  const name = h("input", { type: "search", name: "name", value: q.name || "", placeholder: "part of a file name" });
  const pattern = h("input", { type: "search", name: "pattern", value: q.pattern || "", placeholder: "e.g. glacier|ice", class: "mono" });
  const context = h("input", { type: "number", name: "context", min: 0, max: 2000, value: 60 });
  const findForm = h("form", { id: "find-form", class: "row" },
    picker.wrap, field("File name contains", name), h("button", { type: "submit", class: "primary" }, "Find"));
  const grepForm = h("form", { id: "grep-form", class: "row" },
    field("Pattern (RE2 regular expression)", pattern), field("Context characters", context),
    h("button", { type: "submit", class: "primary" }, "Grep"));
  main.append(section("Find files", findForm, found), section("Grep the files found", grepForm, matches));

  let files = [];
  const find = async () => {
    try {
      const answer = await api("POST", "/api/v1/retrieval/files/find", {
        json: { index_id: picker.control.value, file_name_contains: name.value || undefined, page_size: 200 },
      });
      files = answer.items;
      fill(found, files.length
        ? h("ul", { class: "file-list" }, files.map((f) => h("li", {},
          link("read", { index: picker.control.value, file: f.file_id, name: f.file_name }, f.file_name,
            { "aria-label": `Read ${f.file_name}` }))))
        : h("p", { class: "muted" }, "No file of this index matches."),
      h("p", { class: "muted small" }, `${answer.total_size ?? files.length} file(s)`));
    } catch (e) {
      showError(e, "Finding files");
    }
  };
  findForm.addEventListener("submit", (e) => {
    e.preventDefault();
    find();
  });
  picker.control.addEventListener("change", find);
  grepForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!pattern.value) {
      pattern.focus();
      return;
    }
    await grep(picker.control.value, files, pattern.value, Number(context.value) || 0, matches);
  });
  if (picker.control.value) await find();
}

async function grep(indexId, files, pattern, context, out) {
  fill(out, h("p", { class: "muted" }, `Searching ${files.length} file(s)…`));
  const answers = new Array(files.length);
  const queue = files.map((f, i) => [f, i]);
  let failure = null;
  const worker = async () => {
    for (let next = queue.shift(); next; next = queue.shift()) {
      const [f, i] = next;
      try {
        answers[i] = await api("POST", "/api/v1/retrieval/files/grep", {
          json: { index_id: indexId, file_id: f.file_id, pattern, context_chars: context, page_size: 50 },
        });
      } catch (e) {
        failure = failure || e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(GREP_PARALLEL, files.length) }, worker));
  if (failure) showError(failure, "Grep");
  const hits = files.map((f, i) => [f, answers[i]]).filter(([, a]) => a && a.items.length);
  const total = hits.reduce((n, [, a]) => n + (a.total_size ?? a.items.length), 0);
  fill(out,
    h("p", { class: "summary", id: "grep-summary" }, `${total} match${total === 1 ? "" : "es"} in ${hits.length} file(s)`),
    hits.map(([f, a]) => h("section", { class: "grep-file", dataset: { file: f.file_name } },
      h("h3", {}, f.file_name, h("span", { class: "muted small" }, ` · ${a.total_size ?? a.items.length} match(es)`)),
      h("ol", { class: "grep-matches" }, a.items.map((m) => h("li", {},
        highlighted(m, context),
        link("read", { index: indexId, file: f.file_id, name: f.file_name, start: m.start_char, end: m.end_char, match: 1 },
          "Open here", { class: "small", "aria-label": `Open ${f.file_name} at character ${m.start_char}` })))),
      a.next_page_token ? h("p", { class: "muted small" }, "More matches in this file: narrow the pattern.") : null,
    )));
}

/** The match inside its context: the service cuts `context` characters on each side. */
function highlighted(m, context) {
  const at = m.start_char - Math.max(0, m.start_char - context);
  const len = m.end_char - m.start_char;
  const text = m.content;
  const cutBefore = m.start_char > context;
  const cutAfter = context > 0 && text.length - (at + len) >= context;
  return h("p", { class: "context mono" },
    cutBefore ? "…" : "", text.slice(0, at), h("mark", {}, text.slice(at, at + len)), text.slice(at + len),
    cutAfter ? "…" : "");
}
