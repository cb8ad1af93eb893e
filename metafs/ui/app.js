// metafs /ui: accounts -> stacks -> services -> units, with values and revisions, kept live
// by a long poll on /v1/accounts/. Read-only; needs an operator or reader token. Every value is put
// on the page as text (textContent), never as HTML.
"use strict";

const KINDS = ["account", "stack", "service", "unit"];
const LEVEL_CHILDREN = { account: "stacks", stack: "services", service: "units" };
let token = null;
let shown = new Map(); // path -> revision of what is on the page (to mark changes)

function headers() {
  return { "Metadata-Flavor": "metafs", "Authorization": "Bearer " + token };
}

function setState(text, cls) {
  const el = document.getElementById("state");
  el.textContent = text;
  el.className = "state " + (cls || "");
}

function showError(text) {
  const el = document.getElementById("error");
  el.textContent = text;
  el.hidden = !text;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((c) => node.append(c));
  return node;
}

function revSpan(node) {
  return el("span", { class: "rev" }, "rev " + node.r);
}

// the leaves of a record (and its small maps: labels, metadata, host...) as table rows
function rows(node, prefix, path, out, skip) {
  for (const [name, child] of Object.entries(node.c || {})) {
    if (!prefix && name === skip) continue; // the records below: shown as their own sections
    const key = prefix ? prefix + "/" + name : name;
    const p = path + "/" + name;
    if (child.c !== undefined) {
      rows(child, key, p, out, skip);
    } else {
      const value = Array.isArray(child.v) ? child.v.join(", ") : String(child.v);
      const tr = el("tr", { "data-path": p }, el("td", { class: "key" }, key), el("td", {}, value),
        el("td", {}, revSpan(child)));
      if (shown.has(p) && shown.get(p) !== child.r) tr.className = "changed";
      shown.set(p, child.r);
      out.push(tr);
    }
  }
}

function record(kind, name, node, path) {
  const d = el("details", { open: "", "data-kind": kind, "data-name": name });
  d.append(el("summary", {}, el("span", { class: "kind" }, kind), name, revSpan(node)));
  const trs = [];
  rows(node, "", path, trs, LEVEL_CHILDREN[kind]);
  if (trs.length) d.append(el("table", {}, ...trs));
  const sub = LEVEL_CHILDREN[kind];
  const next = KINDS[KINDS.indexOf(kind) + 1];
  if (sub && node.c && node.c[sub]) {
    for (const [childName, child] of Object.entries(node.c[sub].c || {})) {
      d.append(record(next, childName, child, path + "/" + sub + "/" + childName));
    }
  }
  return d;
}

function render(doc) {
  const main = document.getElementById("tree");
  const accounts = Object.entries(doc.c || {});
  main.replaceChildren(...accounts.map(([name, node]) => record("account", name, node, "/" + name)));
  if (!accounts.length) main.append(el("p", { class: "hint" }, "No accounts yet: metafs load FILE"));
}

async function follow() {
  let index = 0;
  let delay = 500;
  for (;;) {
    const url = "/v1/accounts/?format=meta" + (index ? "&index=" + index + "&wait=55" : "");
    let resp;
    try {
      resp = await fetch(url, { headers: headers(), cache: "no-store" });
    } catch (e) {
      setState("server unreachable, retrying", "stale");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
      continue;
    }
    if (resp.status === 401 || resp.status === 403) {
      return login("This token may not read every account: an operator token is required.");
    }
    if (!resp.ok) {
      setState("server answered " + resp.status + ", retrying", "stale");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
      continue;
    }
    delay = 500;
    const newIndex = Number(resp.headers.get("X-Metafs-Index") || 0);
    const doc = await resp.json();
    if (newIndex !== index || !document.getElementById("tree").childElementCount) render(doc);
    index = newIndex;
    setState("live", "live");
    document.getElementById("revision").textContent = "revision " + resp.headers.get("X-Metafs-Revision");
    document.body.dataset.index = String(index);
  }
}

async function start() {
  showError("");
  document.getElementById("login").hidden = true;
  // operator and reader tokens: the document API is theirs
  const probe = await fetch("/v1/accounts/?format=json", { headers: headers(), cache: "no-store" });
  if (probe.status !== 200) {
    return login(probe.status === 401 ? "Invalid or revoked token." : "An operator or reader token is required.");
  }
  follow();
}

function login(message) {
  sessionStorage.removeItem("metafs-token");
  token = null;
  setState("not connected");
  showError(message || "");
  document.getElementById("login").hidden = false;
}

// a token given as /ui#token=...: kept in this tab, taken out of the address bar and history
function tokenFromHash() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!fromHash) return false;
  sessionStorage.setItem("metafs-token", fromHash);
  history.replaceState(null, "", location.pathname);
  return true;
}

window.addEventListener("hashchange", () => {
  if (tokenFromHash()) location.reload(); // a fresh page: no long poll left with the old token
});

document.addEventListener("DOMContentLoaded", () => {
  tokenFromHash();
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("metafs-token", token);
    start();
  });
  token = sessionStorage.getItem("metafs-token");
  if (token) start(); else login();
});
