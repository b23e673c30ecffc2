// DOM helpers shared by the pages: elements, labelled fields, tables, formatting.

let ids = 0;

/** `h("button", {type: "button", onclick}, "Sync")`: attributes, properties (on*), children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" || k === "checked") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function uid(prefix) {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A control with its <label for>: `field("Top k", h("input", {...}))` (the control gets an id). */
export function field(label, control, hint) {
  if (!control.id) control.id = uid("f");
  const hintEl = hint ? h("small", { id: `${control.id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  const wrap = h("div", { class: control.type === "checkbox" ? "field check" : "field" });
  if (control.type === "checkbox") wrap.append(control, h("label", { for: control.id }, label));
  else wrap.append(h("label", { for: control.id }, label), control);
  if (hintEl) wrap.append(hintEl);
  return wrap;
}

export function select(options, value, attrs = {}) {
  return h(
    "select",
    attrs,
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
  );
}

/** A table: `table(["Name", ...], rows)` where each row is an array of cells (or a <tr>). */
export function table(headers, rows, caption) {
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => h("td", {}, c)))))),
  );
}

export function section(title, ...children) {
  const id = uid("s");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), children);
}

export function score(x, digits = 3) {
  return x === null || x === undefined ? "—" : Number(x).toFixed(digits);
}

export function ms(seconds) {
  return `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
}

/** A timestamp in local time, compact: 2026-12-04 19:05. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** A bar of `fraction` (0..1) of its track, with a text label for everyone. */
export function bar(fraction, label, kind = "") {
  const fillEl = h("span", { class: "bar-fill" });
  fillEl.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  return h("span", { class: `bar ${kind}`, role: "img", "aria-label": label }, fillEl);
}

/**
 * A button that asks once more before it acts (no native dialog): "Delete" turns into
 * "Confirm delete" for five seconds. `what` names the object in the accessible name.
 */
export function confirmButton(text, confirmText, action, what = "") {
  const btn = h("button", { type: "button", class: "danger" }, text);
  const name = (t) => (what ? btn.setAttribute("aria-label", `${t} ${what}`) : null);
  name(text);
  let armed = false;
  let timer;
  btn.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      btn.textContent = confirmText;
      name(confirmText);
      btn.classList.add("armed");
      timer = setTimeout(() => {
        armed = false;
        btn.textContent = text;
        name(text);
        btn.classList.remove("armed");
      }, 5000);
      return;
    }
    clearTimeout(timer);
    btn.disabled = true;
    try {
      await action();
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

/** The route's query (`#/read?index=...`) as an object. */
export function params() {
  const q = location.hash.split("?")[1] || "";
  return Object.fromEntries(new URLSearchParams(q));
}

export function link(pageName, query, text, attrs = {}) {
  const qs = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== null));
  return h("a", { href: `#/${pageName}${qs.toString() ? `?${qs}` : ""}`, ...attrs }, text);
}

/** Plain text of a value for a metadata cell. */
export function plain(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}
