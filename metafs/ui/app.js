// metafs /ui: the fleet as paged lists (services, hosts, units), a search answered by the
// server, and each unit's page as what its container sees at /meta. Every view has its
// own address (#/unit/<id>, #/host/<name>, ...) and is kept live by long polls on what it
// shows; a value that just changed is marked for a few seconds. Read-only. Every value
// is put on the page as text (textContent), never as HTML. No build step, nothing fetched
// from elsewhere: see /v1/fleet/ in the HTTP API. One file past 500 lines, because with
// no build step a second script would be a second request and a second global scope;
// its parts are marked below (the server, marking changes, lists, views, routes, search,
// the token).
"use strict";

const PAGE = 100; // rows on one page of a list: the page stays small whatever the fleet
const FOUND = 20; // search results shown as you type
const MARKED_MS = 4000; // how long a changed value stays marked
let token = null;
let generation = 0; // the view on screen; loops of an older one stop
let controller = null; // aborts the requests of the view left
let seen = new Map(); // what the view showed last: key -> revision (to mark changes)

// -- small helpers -----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function link(href, text) {
  return el("a", { href }, text);
}

function enc(s) {
  return encodeURIComponent(s);
}

function setState(text, cls) {
  const s = document.getElementById("state");
  s.textContent = text;
  s.className = "state " + (cls || "");
}

function showError(text) {
  const e = document.getElementById("error");
  e.textContent = text;
  e.hidden = !text;
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// -- talking to the server ---------------------------------------------------------------

class Refused extends Error {}

function headers() {
  return { "Metadata-Flavor": "metafs", Authorization: "Bearer " + token };
}

// GET url as JSON, retried while the server is away; 401/403 go to the login form
async function get(url, signal) {
  let delay = 500;
  for (;;) {
    let resp;
    try {
      resp = await fetch(url, { headers: headers(), cache: "no-store", signal });
    } catch (e) {
      if (signal && signal.aborted) throw e;
      setState("server unreachable, retrying", "stale");
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
      continue;
    }
    if (resp.status === 401) throw new Refused("Invalid or revoked token.");
    if (resp.status === 403 || resp.status === 404 || resp.status === 400) {
      const text = (await resp.text()).trim();
      if (resp.status === 403 && !url.includes("/v1/view/")) throw new Refused(text);
      return { status: resp.status, text, index: 0, data: null };
    }
    if (!resp.ok) {
      setState("server answered " + resp.status + ", retrying", "stale");
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
      continue;
    }
    setState("live", "live");
    const rev = resp.headers.get("X-Metafs-Revision");
    if (rev) document.getElementById("revision").textContent = "revision " + rev;
    return { status: 200, index: Number(resp.headers.get("X-Metafs-Index") || 0), data: await resp.json() };
  }
}

// show(data) now and again each time what `url` answers changes, until the view is left
async function follow(url, show, mine) {
  let index = 0;
  while (mine === generation) {
    const sep = url.includes("?") ? "&" : "?";
    let got;
    try {
      got = await get(index ? url + sep + "index=" + index + "&wait=55s" : url, controller.signal);
    } catch (e) {
      if (e instanceof Refused) return login(e.message);
      return; // aborted: the view was left
    }
    if (mine !== generation) return;
    if (got.status !== 200) {
      show(null, got.text);
      await sleep(2000);
      index = 0;
      continue;
    }
    if (got.index !== index) show(got.data);
    index = got.index;
  }
}

// -- marking what changed ----------------------------------------------------------------

function mark(tr, key, rev) {
  const before = seen.get(key);
  seen.set(key, rev);
  if (before !== undefined && before !== rev) {
    tr.classList.add("changed");
    window.metafsChangedAt = performance.now();
    setTimeout(() => {
      tr.classList.add("faded");
      tr.classList.remove("changed");
    }, MARKED_MS);
  }
  return tr;
}

// -- lists -------------------------------------------------------------------------------

function pager(total, offset, go) {
  const p = el("div", { class: "pager" });
  const last = Math.min(offset + PAGE, total);
  p.append(total ? `${offset + 1}-${last} of ${total} ` : "none ");
  if (offset > 0) {
    const b = el("button", { type: "button" }, "previous");
    b.addEventListener("click", () => go(Math.max(0, offset - PAGE)));
    p.append(b);
  }
  if (last < total) {
    const b = el("button", { type: "button" }, "next");
    b.addEventListener("click", () => go(offset + PAGE));
    p.append(b);
  }
  return p;
}

function table(heads, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
}

function serviceHref(r) {
  return `#/service/${enc(r.account)}/${enc(r.stack)}/${enc(r.service)}`;
}

function unitRows(items, withService) {
  return items.map((u) =>
    mark(
      el(
        "tr",
        { "data-unit": u.unit },
        el("td", { class: "mono" }, link("#/unit/" + enc(u.unit), u.unit)),
        el("td", {}, u.hostname),
        el("td", { class: "mono" }, u.address),
        withService ? el("td", {}, link(serviceHref(u), `${u.account}/${u.stack}/${u.service}`)) : null,
        el("td", {}, u.host ? link("#/host/" + enc(u.host), u.host) : "-"),
        el("td", { class: "num" }, String(u.cardinal_value)),
        el("td", { class: "rev" }, `rev ${u.changed} ${when(u.changed_at)}`),
      ),
      "unit " + u.unit,
      u.changed,
    ),
  );
}

function unitTable(items, withService) {
  const heads = ["unit", "hostname", "address", ...(withService ? ["service"] : []), "host", "#", "changed"];
  return table(heads, unitRows(items, withService));
}

// a paged list at `base` (a /v1/fleet/ URL), drawn into `into` by `draw(data)`
function pagedList(into, base, draw, mine, offset) {
  const url = base + (base.includes("?") ? "&" : "?") + `offset=${offset}&limit=${PAGE}`;
  follow(
    url,
    (data, why) => {
      if (!data) return into.replaceChildren(el("p", { class: "error" }, why));
      const go = (o) => {
        const route = parseHash();
        route.params.set("offset", String(o));
        location.hash = route.path + "?" + route.params.toString();
      };
      into.replaceChildren(draw(data), pager(data.total, data.offset, go));
      ready();
    },
    mine,
  );
}

// a view that is one paged list under a heading
function listView(main, heading, base, draw, route, mine) {
  const box = el("div");
  main.replaceChildren(el("h2", {}, ...heading), box);
  pagedList(box, base, draw, mine, offsetOf(route));
}

const VIEWS = {
  services(route, main, mine) {
    listView(
      main,
      ["Services"],
      "/v1/fleet/services",
      (d) =>
        table(
          ["account", "stack", "service", "units", "last change"],
          d.items.map((s) =>
            mark(
              el(
                "tr",
                {},
                el("td", {}, s.account),
                el("td", {}, s.stack),
                el("td", {}, link(serviceHref(s), s.service)),
                el("td", { class: "num" }, String(s.units)),
                el("td", { class: "rev" }, s.changed ? `rev ${s.changed} ${when(s.changed_at)}` : ""),
              ),
              `service ${s.account}/${s.stack}/${s.service}`,
              s.changed,
            ),
          ),
        ),
      route,
      mine,
    );
  },
  hosts(route, main, mine) {
    listView(
      main,
      ["Hosts"],
      "/v1/fleet/hosts",
      (d) =>
        table(
          ["host", "address", "hostname", "units"],
          d.items.map((h) =>
            el(
              "tr",
              {},
              el("td", {}, h.host ? link("#/host/" + enc(h.host), h.host) : "(no host)"),
              el("td", { class: "mono" }, h.address),
              el("td", {}, h.hostname),
              el("td", { class: "num" }, String(h.units)),
            ),
          ),
        ),
      route,
      mine,
    );
  },
  units(route, main, mine) {
    listView(main, ["Units"], "/v1/fleet/units", (d) => unitTable(d.items, true), route, mine);
  },
  service(route, main, mine) {
    const path = route.args.slice(0, 3).join("/");
    const heading = [el("span", { class: "kind" }, "service"), path];
    listView(main, heading, `/v1/fleet/units?service=${enc(path)}`, (d) => unitTable(d.items, false), route, mine);
  },
  host(route, main, mine) {
    const [name] = route.args;
    const heading = [el("span", { class: "kind" }, "host"), name];
    listView(main, heading, `/v1/fleet/units?host=${enc(name)}`, (d) => unitTable(d.items, true), route, mine);
  },
  search(route, main, mine) {
    const q = route.params.get("q") || "";
    document.getElementById("search").value = q;
    const box = el("div");
    main.replaceChildren(el("h2", {}, "Units matching ", el("q", {}, q)), box);
    follow(
      `/v1/fleet/search?q=${enc(q)}&limit=200`,
      (d, why) => {
        if (!d) return box.replaceChildren(el("p", { class: "error" }, why));
        const more = d.total > d.items.length ? ` (the first ${d.items.length}: say more)` : "";
        box.replaceChildren(el("p", { class: "hint" }, `${d.total} found${more}`), unitTable(d.items, true));
        ready();
      },
      mine,
    );
  },
  unit(route, main, mine) {
    const [id] = route.args;
    const files = el("tbody");
    const peers = el("div");
    main.replaceChildren(
      el("h2", {}, el("span", { class: "kind" }, "unit"), id),
      el("p", { class: "hint" }, "What its container sees at /meta: every file, its value, the revision and time it last changed."),
      el("table", { class: "file" }, el("thead", {}, el("tr", {}, el("th", {}, "/meta/"), el("th", {}, "value"), el("th", {}, "changed"))), files),
      el("h2", {}, "/meta/service/all_hosts/", el("span", { class: "count" })),
      peers,
    );
    let peersShown = null;
    follow(
      `/v1/view/${enc(id)}/?format=meta&peers=lazy`,
      (view, why) => {
        if (!view) return files.replaceChildren(el("tr", {}, el("td", { class: "error" }, why)));
        files.replaceChildren(...fileRows(view, ""));
        const self = (view.c || {}).self;
        const at = self && self.c && self.c.deployment_unit_id ? String(self.c.deployment_unit_id.v).split("/") : null;
        if (at && peersShown === null) {
          peersShown = at.slice(0, 3).join("/");
          const base = `/v1/fleet/units?service=${enc(peersShown)}`;
          pagedList(peers, base, (d) => unitTable(d.items, false), mine, offsetOf(route));
        }
        ready();
      },
      mine,
    );
  },
};

// a unit's view as the files under /meta: one row per file, directories as headings
const NATURAL = new Intl.Collator(undefined, { numeric: true }); // svc2 before svc10

function fileRows(node, path) {
  const out = [];
  const children = Object.entries(node.c || {}).sort(([a], [b]) => NATURAL.compare(a, b));
  for (const [name, child] of children) {
    const p = path + name;
    if (child.d) {
      out.push(el("tr", { class: "dir" }, el("td", {}, p + "/"), el("td", { class: "hint" }, `${child.n} entries: below`), el("td", {})));
    } else if (child.c !== undefined) {
      out.push(...fileRows(child, p + "/"));
    } else {
      const value = Array.isArray(child.v) ? child.v.join("\n") : String(child.v);
      const changed = new Date(child.m * 1000).toISOString();
      out.push(
        mark(
          el("tr", { "data-path": p }, el("td", {}, p), el("td", {}, value), el("td", { class: "rev" }, `rev ${child.r} ${when(changed)}`)),
          "file " + p,
          child.r,
        ),
      );
    }
  }
  return out;
}

function offsetOf(route) {
  return Number(route.params.get("offset") || 0) || 0;
}

// the page is usable: the first rows are on it (for tests and make bench)
function ready() {
  if (!document.body.dataset.ready) {
    document.body.dataset.ready = "1";
    performance.mark("metafs-ready");
  }
}

// -- routes --------------------------------------------------------------------------------

// #/unit/<id>?offset=100 -> {name: "unit", args: [id], params, path}
function parseHash() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const name = VIEWS[parts[0]] ? parts[0] : "services";
  return { name, args: parts.slice(1), params: new URLSearchParams(query || ""), path: "#" + (path || "/services") };
}

function show() {
  const mine = ++generation;
  if (controller) controller.abort();
  controller = new AbortController();
  seen = new Map();
  const route = parseHash();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.nav === route.name);
  closeFound();
  VIEWS[route.name](route, document.getElementById("view"), mine);
}

// -- search as you type --------------------------------------------------------------------

let asked = 0; // the latest search sent; older answers are dropped

function closeFound() {
  document.getElementById("found").hidden = true;
}

async function searchNow(q, typedAt) {
  const mine = ++asked;
  const list = document.getElementById("found");
  if (!q.trim()) return closeFound();
  let got;
  try {
    got = await get(`/v1/fleet/search?q=${enc(q)}&limit=${FOUND}`);
  } catch (e) {
    if (e instanceof Refused) login(e.message);
    return;
  }
  if (mine !== asked) return;
  const items = got.data ? got.data.items : [];
  list.replaceChildren(
    ...items.map((u) =>
      el("li", {}, link("#/unit/" + enc(u.unit), `${u.hostname}  ${u.address}`), el("span", { class: "why" }, `${u.unit} · ${u.matched}`)),
    ),
  );
  if (!got.data) list.append(el("li", { class: "more" }, got.text));
  else if (got.data.total > items.length) {
    list.append(el("li", { class: "more" }, link("#/search?q=" + enc(q), `all ${got.data.total} found`)));
  } else if (!items.length) list.append(el("li", { class: "more" }, "nothing found"));
  list.hidden = false;
  window.metafsLastSearch = { q, ms: performance.now() - typedAt, found: got.data ? got.data.total : 0 };
}

function setUpSearch() {
  const box = document.getElementById("search");
  let timer = null;
  box.addEventListener("input", () => {
    const typedAt = performance.now();
    clearTimeout(timer);
    timer = setTimeout(() => searchNow(box.value, typedAt), 80);
  });
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && box.value.trim()) location.hash = "#/search?q=" + enc(box.value.trim());
    if (ev.key === "Escape") closeFound();
  });
  document.addEventListener("keydown", (ev) => {
    const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (ev.key === "/" && !typing) {
      ev.preventDefault();
      box.focus();
      box.select();
    }
  });
  document.addEventListener("click", (ev) => {
    if (!ev.target.closest(".finder")) closeFound();
  });
}

// -- the token -----------------------------------------------------------------------------

function login(message) {
  generation++;
  if (controller) controller.abort();
  sessionStorage.removeItem("metafs-token");
  token = null;
  setState("not connected");
  showError(message || "");
  document.getElementById("login").hidden = false;
  document.getElementById("view").replaceChildren();
}

// a token given in the address (#token=... or #/unit/x?token=...): kept in this tab, taken
// out of the address bar and of the history
function tokenFromHash() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(path.startsWith("/") ? query || "" : path);
  const given = params.get("token");
  if (!given) return false;
  params.delete("token");
  sessionStorage.setItem("metafs-token", given);
  const rest = params.toString();
  const route = path.startsWith("/") ? "#" + path + (rest ? "?" + rest : "") : "#/services";
  history.replaceState(null, "", location.pathname + route);
  return true;
}

function start() {
  showError("");
  document.getElementById("login").hidden = true;
  show();
}

// a page left with its long polls open keeps their connections busy until the server
// answers (55 s): the browser has six per server, and the sixth reload waited that long
window.addEventListener("pagehide", () => {
  generation++;
  if (controller) controller.abort();
});

window.addEventListener("hashchange", () => {
  if (tokenFromHash()) token = sessionStorage.getItem("metafs-token");
  if (token) show();
});

document.addEventListener("DOMContentLoaded", () => {
  tokenFromHash();
  setUpSearch();
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = document.getElementById("token").value.trim();
    sessionStorage.setItem("metafs-token", token);
    start();
  });
  token = sessionStorage.getItem("metafs-token");
  if (token) start();
  else login();
});
