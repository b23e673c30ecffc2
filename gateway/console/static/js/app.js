// The console's shell: the hash router, the navigation, signing out and a key that stops working.

import { notify, onUnauthorized, session } from "./api.js";
import * as files from "./files.js";
import * as indexes from "./indexes.js";
import * as keys from "./keys.js";
import * as playground from "./playground.js";
import * as read from "./read.js";
import * as signin from "./signin.js";

const PAGES = { signin, indexes, playground, files, read, keys };
const main = document.getElementById("main");
let current = null;
// A notice that outlives the next route change (why the user was signed out).
let carried = "";

function route() {
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0] || "indexes").toLowerCase();
  const who = session.get();
  if (!who && name !== "signin") {
    location.replace("#/signin");
    return;
  }
  if (who && name === "signin") {
    location.replace("#/indexes");
    return;
  }
  const pageName = PAGES[name] && !(name === "keys" && !who?.isAdmin) ? name : "indexes";
  current?.leave?.();
  current = PAGES[pageName];
  chrome(who, pageName);
  main.replaceChildren();
  notify(carried);
  carried = "";
  document.title = `${current.title} · Quarry console`;
  current.render(main);
  // Keyboard and screen-reader users land on the new page, not on the link they followed.
  if (pageName !== "signin" && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

function chrome(who, pageName) {
  document.getElementById("nav").hidden = !who;
  document.getElementById("who").hidden = !who;
  document.getElementById("nav-keys").hidden = !who?.isAdmin;
  document.getElementById("who-project").textContent = who
    ? `Project ${who.project}${who.isAdmin ? " · admin key" : ""}`
    : "";
  for (const a of document.querySelectorAll("#nav a")) {
    const active = a.dataset.page === pageName || (pageName === "read" && a.dataset.page === "files");
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  location.hash = "#/signin";
});

onUnauthorized((error) => {
  session.clear();
  carried = `Signed out: the gateway refused the key (${error.message}).`;
  location.hash = "#/signin";
});

window.addEventListener("hashchange", route);
route();
