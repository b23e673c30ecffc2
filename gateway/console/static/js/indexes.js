// Indexes: counts and sync state (polled while a sync runs), failed files with their reasons;
// create an index, upload files or a folder into its source directory, sync, delete.

import { api, message, notify, showError, upload } from "./api.js";
import { MAX_CHUNKS, chunksOf, fileCount, listIndexes } from "./data.js";
import { bar, confirmButton, field, fill, h, link, section, when } from "./ui.js";

export const title = "Indexes";

const ACTIVE = new Set(["pending", "running"]);
const PARALLEL_UPLOADS = 4;

let state = null;

export function leave() {
  if (state) clearTimeout(state.timer);
  state = null;
}

export function render(main) {
  state = { rows: new Map(), timer: 0, selected: null, uploads: 0 };
  const body = h("tbody");
  const empty = h("p", { class: "muted" }, "Loading…");
  state.body = body;
  state.empty = empty;
  state.uploadCard = h("div");
  main.append(
    h("h1", {}, "Indexes"),
    h("div", { class: "two-col" },
      h("div", {},
        section("Indexes of the project",
          empty,
          h("table", { class: "indexes" },
            h("thead", {}, h("tr", {}, ["Name", "Files", "Chunks", "Sync", "Last synced", "Actions"]
              .map((x) => h("th", { scope: "col" }, x)))),
            body)),
      ),
      h("div", {}, createForm(), state.uploadCard),
    ),
  );
  refresh();
}

// ---- the list --------------------------------------------------------------------------------

async function refresh() {
  const mine = state;
  if (!mine) return;
  clearTimeout(mine.timer);
  let items;
  try {
    items = await listIndexes();
  } catch (e) {
    showError(e, "Listing the indexes");
    return;
  }
  if (state !== mine) return;
  mine.empty.textContent = items.length ? "" : "No index yet: create one, upload files, sync.";
  mine.empty.hidden = items.length > 0;
  const seen = new Set();
  for (const index of items) {
    seen.add(index.id);
    let row = mine.rows.get(index.id);
    if (!row) {
      row = makeRow(index);
      mine.rows.set(index.id, row);
      mine.body.append(row.tr);
    }
    row.update(index);
    countsOf(row, index);
  }
  for (const [id, row] of mine.rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      mine.rows.delete(id);
      if (mine.selected?.id === id) selectIndex(null);
    }
  }
  if (!mine.selected && items.length) selectIndex(items[0]);
  else if (mine.selected) mine.selected = items.find((i) => i.id === mine.selected.id) || mine.selected;
  if (items.some((i) => ACTIVE.has(i.sync_status))) mine.timer = setTimeout(refresh, 1000);
}

function makeRow(index) {
  const name = h("td");
  const files = h("td", { class: "num" }, "…");
  const chunks = h("td", { class: "num" }, "…");
  const sync = h("td", { class: "sync" });
  const synced = h("td", { class: "nowrap" });
  const actions = h("div", { class: "actions" },
    h("button", { type: "button", onclick: () => selectIndex(row.index, true) }, "Upload"),
    h("button", { type: "button", onclick: () => startSync(row.index) }, "Sync"),
    confirmButton("Delete", "Confirm delete", () => removeIndex(row.index), index.name),
  );
  const tr = h("tr", { dataset: { indexId: index.id } }, name, files, chunks, sync, synced, h("td", {}, actions));
  const row = {
    tr, index, files, chunks,
    update(i) {
      row.index = i;
      fill(name, link("playground", { index: i.id }, i.name || i.id, { title: `Search ${i.name} in the playground` }),
        h("div", { class: "muted mono id" }, i.id));
      fill(sync, syncCell(i));
      synced.textContent = when(i.last_synced_at);
      actions.querySelectorAll("button")[0].setAttribute("aria-label", `Upload files to ${i.name}`);
      actions.querySelectorAll("button")[1].setAttribute("aria-label", `Sync ${i.name}`);
      actions.querySelectorAll("button")[1].disabled = ACTIVE.has(i.sync_status);
    },
  };
  return row;
}

function syncCell(index) {
  const status = index.sync_status || "never synced";
  const p = index.sync_progress;
  const out = [h("span", { class: `badge ${status}`, "data-status": status }, status.replace("_", " "))];
  if (p && p.total_items) {
    const label = `${p.done_items} of ${p.total_items} files`;
    out.push(bar(p.done_items / p.total_items, label, status), h("span", { class: "small" }, label));
  }
  if (p?.error) out.push(h("div", { class: "form-error small" }, p.error));
  if (p?.failed_items) {
    out.push(h("details", { class: "failures" },
      h("summary", {}, `${p.failed_items} file${p.failed_items === 1 ? "" : "s"} failed`),
      h("ul", {}, (p.failures || []).map((f) => h("li", {}, h("strong", {}, f.file_name || f.directory_file_id), ": ", f.error))),
    ));
  }
  return out;
}

/** Files and chunks, counted again only when the index changed (a sync ended, an upload). */
async function countsOf(row, index) {
  const stamp = `${index.sync_status}|${index.last_synced_at}|${state.uploads}`;
  if (row.stamp === stamp) return;
  row.stamp = stamp;
  row.chunks.textContent = "…";
  const current = () => row.stamp === stamp;  // a later count supersedes this one
  try {
    const files = await fileCount(index);
    if (current()) row.files.textContent = String(files);
    if (ACTIVE.has(index.sync_status)) return;
    const n = (await chunksOf(index.id)).length;
    if (current()) row.chunks.textContent = n >= MAX_CHUNKS ? `${MAX_CHUNKS}+` : String(n);
  } catch (e) {
    if (!current()) return;
    row.chunks.textContent = "?";
    row.chunks.title = message(e);
  }
}

async function startSync(index) {
  try {
    await api("POST", `/api/v1/indexes/${encodeURIComponent(index.id)}/sync`);
    notify(`Sync of ${index.name} started.`, "info");
  } catch (e) {
    showError(e, `Syncing ${index.name}`);
  }
  refresh();
}

async function removeIndex(index) {
  try {
    await api("DELETE", `/api/v1/indexes/${encodeURIComponent(index.id)}`);
    notify(`Index ${index.name} deleted.`, "info");
  } catch (e) {
    showError(e, `Deleting ${index.name}`);
  }
  refresh();
}

// ---- create ----------------------------------------------------------------------------------

function createForm() {
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 200, autocomplete: "off" });
  const shots = h("input", { type: "checkbox", name: "screenshots", checked: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Create index");
  const form = h("form", { id: "create-index" },
    field("Name", name, "A directory of the same name holds its files."),
    field("Store page screenshots of PDFs", shots),
    submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = name.value.trim();
    if (!value) {
      name.focus();
      return;
    }
    submit.disabled = true;
    try {
      const directory = await api("POST", "/api/v1/beta/directories", { json: { name: value } });
      const index = await api("POST", "/api/v1/indexes", {
        json: {
          source_directory_id: directory.id, name: value,
          store_attachments: shots.checked ? ["page_screenshot"] : undefined,
        },
      });
      notify(`Index ${value} created: upload files to it, then sync.`, "info");
      name.value = "";
      await refresh();
      selectIndex(index, true);
    } catch (e) {
      showError(e, "Creating the index");
    } finally {
      submit.disabled = false;
    }
  });
  return section("Create an index", form);
}

// ---- upload ------------------------------------------------------------------------------------

function selectIndex(index, focus = false) {
  if (!state) return;
  state.selected = index;
  for (const [id, row] of state.rows) row.tr.classList.toggle("selected", index?.id === id);
  fill(state.uploadCard, index ? uploadCard(index) : null);
  if (focus) state.uploadCard.querySelector("input[type=file]")?.focus();
}

function uploadCard(index) {
  const list = h("ul", { class: "uploads", "aria-live": "polite" });
  const meta = h("textarea", { rows: 2, name: "metadata", placeholder: '{"team": "docs", "year": 2024}' });
  const sync = h("input", { type: "checkbox", name: "sync", checked: true });
  const pick = h("input", { type: "file", multiple: true, name: "files" });
  const folder = h("input", { type: "file", multiple: true, name: "folder", webkitdirectory: true });
  const zone = h("div", { class: "dropzone", id: "dropzone" }, "Drop files or a folder here");
  const send = (files) => uploadAll(index, files, { list, meta, sync });
  pick.addEventListener("change", () => send([...pick.files].map((f) => [f, f.name])).then(() => (pick.value = "")));
  folder.addEventListener("change", () =>
    send([...folder.files].map((f) => [f, f.webkitRelativePath || f.name])).then(() => (folder.value = "")));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    send(await droppedFiles(e.dataTransfer));
  });
  return section(`Upload to ${index.name}`,
    zone,
    h("div", { class: "row" }, field("Choose files", pick), field("Choose a folder", folder)),
    field("Metadata for these files (JSON object, optional)", meta, "Every chunk of the files carries it; filter on it in the playground."),
    field("Sync when the uploads finish", sync),
    list);
}

/** Files of a drop, folders walked (their paths kept as the display names). */
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...transfer.files].map((f) => [f, f.name]);
  const out = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      const file = await new Promise((ok, fail) => entry.file(ok, fail));
      out.push([file, entry.fullPath.replace(/^\//, "")]);
      return;
    }
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!batch.length) break;
      for (const child of batch) await walk(child);
    }
  };
  for (const entry of entries) await walk(entry);
  return out;
}

async function uploadAll(index, files, { list, meta, sync }) {
  if (!files.length) return;
  const metadata = meta.value.trim();
  if (metadata) {
    try {
      const parsed = JSON.parse(metadata);
      if (typeof parsed !== "object" || Array.isArray(parsed) || parsed === null) throw new Error("not an object");
    } catch {
      notify("Metadata must be a JSON object, e.g. {\"team\": \"docs\"}.");
      meta.focus();
      return;
    }
  }
  const queue = files.map(([file, name]) => {
    const progress = h("progress", { max: 1, value: 0, "aria-label": `Upload of ${name}` });
    const status = h("span", { class: "small" }, "waiting");
    list.append(h("li", { dataset: { file: name } }, h("span", { class: "mono" }, name), progress, status));
    return { file, name, progress, status };
  });
  let failed = 0;
  const worker = async () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      const form = new FormData();
      form.append("upload_file", item.file, item.name);
      form.append("display_name", item.name);
      if (metadata) form.append("metadata", metadata);
      item.status.textContent = "uploading";
      try {
        await upload(`/api/v1/beta/directories/${encodeURIComponent(index.source_directory_id)}/files/upload`, form,
          (f) => (item.progress.value = f));
        item.status.textContent = "uploaded";
      } catch (e) {
        failed += 1;
        item.status.textContent = `failed: ${message(e)}`;
        item.status.classList.add("form-error");
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_UPLOADS, queue.length) }, worker));
  if (state) state.uploads += 1;
  if (failed) notify(`${failed} of ${files.length} uploads failed (see the list).`);
  if (sync.checked) await startSync(index);
  else refresh();
}
