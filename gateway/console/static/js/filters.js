// The metadata filter editor: one row per condition, with the operators of the API in use.
//
// v2 (`custom_filters`): eq ne gt lt gte lte in nin; several rows on one key become that key's
// list of range bounds (all must hold). Pipelines (`search_filters`, LlamaIndex's
// MetadataFilters): == != > < >= <= in nin any all contains text_match text_match_insensitive
// is_empty, combined with and / or / not.

import { field, h, select } from "./ui.js";

export const OPERATORS = {
  v2: ["eq", "ne", "gt", "lt", "gte", "lte", "in", "nin"],
  pipelines: ["==", "!=", ">", "<", ">=", "<=", "in", "nin", "any", "all", "contains", "text_match",
    "text_match_insensitive", "is_empty"],
};
const SAME = { eq: "==", ne: "!=", gt: ">", lt: "<", gte: ">=", lte: "<=", in: "in", nin: "nin" };
const LIST_OPS = new Set(["in", "nin", "any", "all"]);

function scalar(text) {
  const t = text.trim();
  if (t === "true" || t === "false") return t === "true";
  if (/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(t)) return Number(t);
  if (/^".*"$/.test(t)) return JSON.parse(t);
  return t;
}

/** A row's value: a list for list operators ("a, b" or JSON), none for is_empty, else a scalar. */
export function parseValue(text, op) {
  if (op === "is_empty") return null;
  const t = text.trim();
  if (t.startsWith("[")) return JSON.parse(t);
  if (LIST_OPS.has(op)) return t.split(",").filter((x) => x.trim()).map(scalar);
  return scalar(t);
}

export function filterEditor() {
  let apiName = "v2";
  const rows = h("div", { class: "filter-rows" });
  const condition = select([["and", "all hold (and)"], ["or", "any holds (or)"], ["not", "none holds (not)"]], "and");
  const conditionField = field("Combine conditions", condition);
  const add = h("button", { type: "button", onclick: () => addRow() }, "Add filter");
  const el = h("fieldset", { class: "filters" }, h("legend", {}, "Metadata filters"), rows, conditionField, add);

  function addRow(key = "", op, value = "") {
    const n = rows.children.length + 1;
    const keyInput = h("input", { type: "text", value: key, class: "f-key", "aria-label": `Filter ${n} key`, placeholder: "key" });
    const opSelect = select(OPERATORS[apiName].map((o) => [o, o]), op || OPERATORS[apiName][0],
      { class: "f-op", "aria-label": `Filter ${n} operator` });
    const valueInput = h("input", { type: "text", value, class: "f-value", "aria-label": `Filter ${n} value`, placeholder: "value" });
    const row = h("div", { class: "filter-row" }, keyInput, opSelect, valueInput);
    row.append(h("button", { type: "button", class: "link", "aria-label": `Remove filter ${n}`, onclick: () => row.remove() }, "Remove"));
    rows.append(row);
    keyInput.focus();
    return row;
  }

  function entries() {
    return [...rows.children]
      .map((r) => ({ key: r.querySelector(".f-key").value.trim(), op: r.querySelector(".f-op").value,
        text: r.querySelector(".f-value").value }))
      .filter((e) => e.key);
  }

  return {
    el,
    addRow,
    /** Switch the operators to those of `name` ("v2" or "pipelines"), mapping what maps. */
    setApi(name) {
      const before = apiName;
      apiName = name;
      conditionField.hidden = name !== "pipelines";
      for (const r of rows.children) {
        const s = r.querySelector(".f-op");
        const old = s.value;
        const mapped = before === name ? old
          : name === "pipelines" ? SAME[old] : Object.keys(SAME).find((k) => SAME[k] === old);
        s.replaceChildren(...OPERATORS[name].map((o) => h("option", { value: o }, o)));
        s.value = mapped || OPERATORS[name][0];
      }
    },
    /** The request field of the API in use (`custom_filters` or `search_filters`), or undefined. */
    compile() {
      const list = entries();
      if (!list.length) return undefined;
      if (apiName === "pipelines") {
        return {
          filters: list.map((e) => ({ key: e.key, operator: e.op, value: parseValue(e.text, e.op) })),
          condition: condition.value,
        };
      }
      const out = {};
      for (const e of list) {
        const cond = { operator: e.op, value: parseValue(e.text, e.op) };
        if (!(e.key in out)) out[e.key] = cond;
        else out[e.key] = [...(Array.isArray(out[e.key]) ? out[e.key] : [out[e.key]]), cond];
      }
      return out;
    },
  };
}
