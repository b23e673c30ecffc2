// The public HTTP API, called with the signed-in key, and how its errors are shown.
//
// The key lives in this tab's sessionStorage only; every call sends it as
// `Authorization: Bearer <key>`. Nothing here talks to anything but the gateway that served
// the page (same origin), so the console works against any replica.

const STORE = "quarry.console";

export const session = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE) || "null");
    } catch {
      return null;
    }
  },
  set(value) {
    sessionStorage.setItem(STORE, JSON.stringify(value));
  },
  clear() {
    sessionStorage.removeItem(STORE);
  },
  key() {
    return this.get()?.key || "";
  },
};

/** An API answer that was not a success: the status and the gateway's `detail` in words. */
export class ApiError extends Error {
  constructor(status, detail, method, path) {
    super(describe(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.method = method;
    this.path = path;
  }
}

/** `detail` is a message, or FastAPI's list of field errors (`loc` names the field). */
function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const loc = (d.loc || []).filter((p) => p !== "body").join(".");
        return loc ? `${loc}: ${d.msg}` : d.msg;
      })
      .join("; ");
  }
  return detail ? JSON.stringify(detail) : "";
}

const listeners = new Set();
/** Called with every 401 (a key that stopped working: revoked, expired). */
export function onUnauthorized(fn) {
  listeners.add(fn);
}

function url(path, query) {
  const u = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) u.searchParams.append(k, String(one));
  }
  return u.pathname + u.search;
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return response.text();
}

/**
 * Call the API: `api("POST", "/api/v1/indexes", {json: {...}})`. Resolves to the parsed body;
 * rejects with an `ApiError` (or a TypeError when the gateway cannot be reached).
 * `key` overrides the session's key (sign-in checks a key before keeping it).
 */
export async function api(method, path, { json, query, key, signal } = {}) {
  const headers = { Authorization: `Bearer ${key ?? session.key()}`, Accept: "application/json" };
  const init = { method, headers, signal };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(url(path, query), init);
  const body = await parse(response);
  if (!response.ok) {
    const error = new ApiError(response.status, body && typeof body === "object" ? body.detail : body, method, path);
    if (response.status === 401 && key === undefined) listeners.forEach((fn) => fn(error));
    throw error;
  }
  return body;
}

/** Bytes from the API (a page screenshot) as an object URL for an <img>. */
export async function blobUrl(path) {
  const response = await fetch(url(path), { headers: { Authorization: `Bearer ${session.key()}` } });
  if (!response.ok) throw new ApiError(response.status, (await parse(response))?.detail, "GET", path);
  return URL.createObjectURL(await response.blob());
}

/**
 * A multipart upload with progress (fetch reports none for request bodies): `onProgress`
 * gets the fraction sent, 0..1. Resolves to the parsed body.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${session.key()}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(xhr.response);
      } else {
        const error = new ApiError(xhr.status, xhr.response?.detail, "POST", path);
        if (xhr.status === 401) listeners.forEach((fn) => fn(error));
        reject(error);
      }
    };
    xhr.onerror = () => reject(new TypeError("the gateway could not be reached"));
    xhr.send(form);
  });
}

/** Words for any error a call can end with. */
export function message(error) {
  if (error instanceof ApiError) return `${error.status}: ${error.message}`;
  if (error instanceof TypeError) return `the gateway could not be reached (${error.message})`;
  return String(error?.message || error);
}

let noticeTimer;
/** Show an error (or, `kind` "info", a note that goes away after a while) in the alert region. */
export function notify(text, kind = "error") {
  const box = document.getElementById("notice");
  clearTimeout(noticeTimer);
  box.textContent = text;
  box.dataset.kind = kind;
  box.hidden = !text;
  if (text && kind === "info") noticeTimer = setTimeout(() => (box.hidden = true), 8000);
}

export function showError(error, what = "") {
  notify(what ? `${what} failed: ${message(error)}` : message(error), "error");
}

/** Every page of a list route that pages by `page_token`. */
export async function allPages(path, query = {}) {
  const items = [];
  let token;
  do {
    const page = await api("GET", path, { query: { ...query, page_token: token } });
    items.push(...page.items);
    token = page.next_page_token;
  } while (token);
  return items;
}
