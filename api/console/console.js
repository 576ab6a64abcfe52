// kvconf web console: one hand-written ES module, no framework, no build step.
// It calls the REST API of the same origin with fetch() and the bearer token
// kept in sessionStorage; the DOM is built with createElement only (never
// innerHTML), so a stored value can never become markup.

const TOKEN_KEY = "kvconf.token";
const RANK = { read: 1, write: 2, admin: 3 };
const LAYERS = {
  namespace: "namespace",
  tenant_defaults: "_defaults",
  environment: "environment",
  schema_default: "schema default",
};
const MASK = "***";

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  me: null,
  tenants: [],
  deleted: new Set(), // soft-deleted tenants (listed with include_deleted)
  infos: new Map(), // tenant -> info (revision, namespaces) or null when unreadable
  tenant: null,
  view: null, // current view object: { name, refresh(event) }
  drafts: new Map(), // "tenant/ns" -> draft
  stream: null, // { tenant, controller }
  editing: null, // { tenant, ns, key, warn(node) } while the edit dialog is open
};

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const T = (t) => `/api/v1/tenants/${enc(t)}`;
const NS = (t, ns) => `${T(t)}/namespaces/${enc(ns)}`;

// ---------------------------------------------------------------- DOM helpers

const kids = (xs) => xs.flat().filter((x) => x !== null && x !== undefined && x !== false);
/** Replace an element's children, skipping null/undefined/false. */
const put = (el, ...xs) => el.replaceChildren(...kids(xs));
/** Append children, skipping null/undefined/false. */
const add = (el, ...xs) => el.append(...kids(xs));

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    add(el, c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

const reasonIds = new Map();
function reasonId(text) {
  let id = reasonIds.get(text);
  if (!id) {
    id = nextId("why");
    reasonIds.set(text, id);
    add($("reasons"), h("span", { id, text }));
  }
  return id;
}

/** A button; `need` names the right it requires on `tenant` (else disabled with the reason). */
function button(label, onClick, opts = {}) {
  const b = h("button", { type: opts.type || "button", class: opts.cls, "aria-label": opts.label }, label);
  if (opts.need && !can(opts.tenant, opts.need, opts.ns)) {
    deny(b, `Needs the ${opts.need} right on ${opts.ns ? `${opts.tenant}/${opts.ns}` : opts.tenant}`);
  } else if (opts.deny) {
    deny(b, opts.deny);
  }
  b.addEventListener("click", (e) => {
    if (b.getAttribute("aria-disabled") === "true") {
      e.preventDefault();
      toast(b.title, "info");
      return;
    }
    onClick(e);
  });
  return b;
}

function deny(b, reason) {
  b.setAttribute("aria-disabled", "true");
  b.title = reason;
  b.setAttribute("aria-describedby", reasonId(reason));
  b.classList.add("denied");
}

function allow(b) {
  b.removeAttribute("aria-disabled");
  b.removeAttribute("aria-describedby");
  b.title = "";
  b.classList.remove("denied");
}

function field(label, input, hint) {
  const id = input.id || nextId("f");
  input.id = id;
  const hintNode = hint ? h("span", { class: "hint", id: `${id}-hint`, text: hint }) : null;
  if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: id, text: label }), input, hintNode);
}

function toast(message, kind = "ok") {
  const node = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  add($("toasts"), node);
  setTimeout(() => node.remove(), kind === "error" ? 8000 : 4000);
}

function fmtTime(ts) {
  if (!ts) return "—";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  const p2 = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
}

function json(value, pretty = false) {
  if (value === undefined) return "";
  return pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value);
}

function valueNode(value, { masked = false, deleted = false } = {}) {
  if (deleted) return h("span", { class: "badge gray", text: "deleted" });
  if (masked) return h("span", { class: "masked", title: "Sensitive: needs the secrets right", text: MASK });
  const text = json(value);
  const shown = text.length > 120 ? `${text.slice(0, 117)}…` : text;
  return h("code", { class: "value", title: text.length > 120 ? text : undefined, text: shown });
}

function empty(text) {
  return h("p", { class: "empty", text });
}

function errorText(err) {
  if (err instanceof ApiError) return `${err.message} (HTTP ${err.status})`;
  return err && err.message ? err.message : String(err);
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.code = this.body.code || "";
  }
}

function authHeaders() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(method, path, { body, query, headers } = {}) {
  let url = path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) qs.set(k, String(v));
    if ([...qs].length) url += `?${qs}`;
  }
  const init = { method, headers: { Accept: "application/json", ...authHeaders(), ...headers }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!res.ok) {
    const err = new ApiError(res.status, doc && doc.error ? doc.error : { message: res.statusText });
    if (res.status === 401 && state.me) {
      signOut("Your token was refused (expired or revoked). Sign in again.");
    }
    throw err;
  }
  return doc;
}

// ---------------------------------------------------------------- rights

/** Does a grant's scope ("*", "acme", "acme/ai-12", "acme/ai-*") cover this tenant (and namespace)? */
function covers(scope, tenant, ns) {
  if (scope === "*" || scope === tenant) return true;
  if (ns === undefined || !scope.startsWith(`${tenant}/`)) return false;
  const pattern = scope.slice(tenant.length + 1);
  return pattern.endsWith("*") ? ns.startsWith(pattern.slice(0, -1)) : pattern === ns;
}

/** The rights on a tenant, or on one of its namespaces (namespace grants count there only). */
function rightsOn(tenant, ns) {
  const g = (state.me && state.me.grants) || {};
  const out = new Set();
  for (const [scope, rights] of Object.entries(g)) {
    if (covers(scope, tenant, ns)) rights.forEach((r) => out.add(r));
  }
  return out;
}

function can(tenant, right, ns) {
  const rights = rightsOn(tenant, ns);
  if (right === "secrets") return rights.has("secrets");
  return [...rights].some((r) => (RANK[r] || 0) >= RANK[right]);
}

function adminSomewhere() {
  const g = (state.me && state.me.grants) || {};
  return Object.values(g).some((rs) => rs.includes("admin"));
}

// ---------------------------------------------------------------- sign in

async function start() {
  $("signout").addEventListener("click", () => signOut());
  $("menu").addEventListener("click", () => toggleMenu());
  $("sidebar").addEventListener("click", (e) => {
    if (e.target.closest("a")) toggleMenu(false); // also when the link is the current page
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && $("sidebar").classList.contains("open")) toggleMenu(false);
  });
  window.addEventListener("hashchange", () => route());
  document.querySelector(".skip").addEventListener("click", (e) => {
    e.preventDefault(); // the hash is the router's: focus the content instead
    $("main").focus();
  });
  try {
    state.me = await api("GET", "/api/v1/tokens/me");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      renderSignIn(`Cannot reach the server: ${errorText(err)}`);
      return;
    }
    state.me = null;
  }
  if (!state.me) {
    if (state.token) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = "";
    }
    renderSignIn();
    return;
  }
  await signedIn();
}

function renderSignIn(message) {
  document.body.classList.add("signed-out");
  put($("sidebar"));
  $("who").textContent = "";
  $("signout").hidden = true;
  $("live").textContent = "";
  const input = h("input", { type: "password", autocomplete: "off", spellcheck: "false", name: "token" });
  const status = h("p", { class: "form-error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", text: "Sign in to kvconf" }),
    h("p", { class: "muted", text: "Paste an API token. It is kept in this browser tab only (sessionStorage) and sent to this server alone." }),
    field("Token", input, "Leave empty when the server runs open on loopback."),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Sign in" })),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    state.token = input.value.trim();
    try {
      state.me = await api("GET", "/api/v1/tokens/me");
    } catch (err) {
      state.token = "";
      status.textContent =
        err instanceof ApiError && err.status === 401 ? "This token was refused." : errorText(err);
      input.focus();
      return;
    }
    if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
    await signedIn();
  });
  put($("main"), form);
  input.focus();
}

async function signedIn() {
  document.body.classList.remove("signed-out");
  const me = state.me;
  $("who").textContent = me.open ? "open mode (no token)" : `signed in as ${me.name}`;
  $("signout").hidden = me.open;
  await loadTenants();
  if (!state.tenantTimer) {
    // tenants created or deleted elsewhere show up without a reload
    state.tenantTimer = setInterval(() => {
      if (state.me) loadTenants().then(renderSidebar, () => {});
    }, 30000);
  }
  if (!location.hash || location.hash === "#" || location.hash === "#/signin") {
    // replaceState fires no hashchange: exactly one route() below
    const live = state.tenants.filter((t) => !state.deleted.has(t));
    history.replaceState(null, "", live.length ? `#/t/${enc(live[0])}` : "#/");
  }
  await route();
  $("main").focus(); // the sign-in form is gone: keyboard users continue in the content
}

function signOut(message) {
  stopStream();
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  state.me = null;
  state.tenant = null;
  state.drafts.clear();
  history.replaceState(null, "", "#/signin");
  renderSignIn(message);
}

// ---------------------------------------------------------------- tenants & sidebar

async function loadTenants() {
  const doc = await api("GET", "/api/v1/tenants?include_deleted=true");
  state.deleted = new Set(doc.deleted || []);
  state.tenants = [...doc.tenants, ...state.deleted].sort();
  const infos = await Promise.all(
    state.tenants.slice(0, 100).map((t) => (state.deleted.has(t) ? null : api("GET", T(t)).catch(() => null))),
  );
  state.infos = new Map(state.tenants.map((t, i) => [t, infos[i] || null]));
}

async function refreshInfo(tenant) {
  try {
    state.infos.set(tenant, await api("GET", T(tenant)));
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) state.infos.set(tenant, null);
  }
  renderSidebar();
}

function toggleMenu(open) {
  const sb = $("sidebar");
  const want = open === undefined ? !sb.classList.contains("open") : open;
  sb.classList.toggle("open", want);
  $("menu").setAttribute("aria-expanded", String(want));
}

function navLink(href, label, current, extra) {
  return h(
    "a",
    { href, class: `nav-link${current ? " current" : ""}`, "aria-current": current ? "page" : undefined },
    h("span", { class: "nav-label", text: label }),
    extra,
  );
}

function renderSidebar() {
  const r = state.route || {};
  const nodes = [h("h2", { class: "nav-title", text: "Tenants" })];
  if (!state.tenants.length) nodes.push(empty("No tenant visible to this token."));
  const list = h("ul", { class: "nav-list" });
  for (const t of state.tenants) {
    const info = state.infos.get(t);
    const badge = info
      ? h("span", { class: "badge", "aria-hidden": "true", text: `r${info.revision}` })
      : h("span", { class: "badge gray", "aria-hidden": "true", text: "deleted" });
    const link = navLink(`#/t/${enc(t)}`, t, r.tenant === t && r.page === "tenant", badge);
    link.title = info
      ? `${t}: revision ${info.revision}, ${info.namespaces.length} namespaces`
      : state.deleted.has(t) ? `${t}: soft-deleted (undelete to bring it back)` : `${t}: unreadable`;
    const item = h("li", {}, link);
    if (t === r.tenant && info) {
      const sub = h("ul", { class: "nav-sub", "aria-label": `${t} namespaces` });
      for (const ns of info.namespaces) {
        add(sub, h("li", {}, navLink(`#/t/${enc(t)}/ns/${enc(ns)}`, ns, r.ns === ns && r.page !== "time")));
      }
      const pages = [
        ["log", "Change log"],
        ["time", "Time travel"],
        ["fleet", "Fleet"],
        ["snapshots", "Snapshots"],
      ];
      const tools = h("ul", { class: "nav-sub tools", "aria-label": `${t} tools` });
      for (const [page, label] of pages) {
        add(tools, h("li", {}, navLink(`#/t/${enc(t)}/${page}`, label, r.page === page)));
      }
      add(item, sub, tools);
    }
    add(list, item);
  }
  nodes.push(list);
  if (adminSomewhere()) {
    nodes.push(h("h2", { class: "nav-title", text: "Administration" }));
    nodes.push(h("ul", { class: "nav-list" }, h("li", {}, navLink("#/tokens", "Tokens", r.page === "tokens"))));
  }
  put($("sidebar"), ...nodes);
}

// ---------------------------------------------------------------- routing

function parseRoute() {
  const decode = (part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part; // a malformed %-escape: shown as typed, never a broken router
    }
  };
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decode);
  if (parts[0] === "tokens") return { page: "tokens" };
  if (parts[0] !== "t" || !parts[1]) return { page: "home" };
  const r = { tenant: parts[1], page: "tenant" };
  if (parts[2] === "ns" && parts[3] !== undefined) {
    r.ns = parts[3];
    r.page = "ns";
    if (parts[4] === "k" && parts[5] !== undefined) {
      r.key = parts[5];
      r.page = "key";
    }
  } else if (["log", "time", "fleet", "snapshots"].includes(parts[2])) {
    r.page = parts[2];
    if (parts[2] === "time" && parts[3]) r.revision = Number(parts[3]);
  }
  return r;
}

let routeSeq = 0;

async function route() {
  if (!state.me) return;
  const seq = ++routeSeq;
  const r = parseRoute();
  if (location.hash !== state.lastHash) toggleMenu(false);
  state.lastHash = location.hash;
  state.route = r;
  if (r.tenant && r.tenant !== state.tenant) {
    state.tenant = r.tenant;
    if (state.tenants.includes(r.tenant)) followTenant(r.tenant);
    else stopStream();
  }
  renderSidebar();
  const main = $("main");
  put(main, h("p", { class: "muted", text: "Loading…" }));
  const views = {
    home: homeView,
    tenant: tenantView,
    ns: namespaceView,
    key: keyView,
    log: logView,
    time: timeView,
    fleet: fleetView,
    snapshots: snapshotsView,
    tokens: tokensView,
  };
  if (state.view && state.view.close) state.view.close();
  state.view = null;
  try {
    const view = await views[r.page](r);
    if (seq !== routeSeq) {
      if (view.close) view.close();
      return; // a newer navigation renders instead
    }
    state.view = view;
    put(main, view.node);
    const heading = main.querySelector("h1");
    if (heading) {
      document.title = `${heading.textContent} · kvconf`;
    }
  } catch (err) {
    if (seq !== routeSeq) return;
    put(main, 
      h("div", { class: "card" }, h("h1", { text: "Cannot show this page" }), h("p", { class: "form-error", text: errorText(err) })),
    );
  }
}

function crumbs(...items) {
  const nav = h("nav", { class: "crumbs", "aria-label": "Breadcrumb" });
  items.forEach(([label, href], i) => {
    if (i) add(nav, h("span", { class: "sep", "aria-hidden": "true", text: "/" }));
    add(nav, href ? h("a", { href, text: label }) : h("span", { text: label }));
  });
  return nav;
}

// ---------------------------------------------------------------- home & tenant

async function homeView() {
  const rows = state.tenants.map((t) => {
    const info = state.infos.get(t);
    return h(
      "tr",
      {},
      h("td", { "data-label": "Tenant" }, h("a", { href: `#/t/${enc(t)}`, text: t })),
      h("td", { "data-label": "Revision", text: info ? info.revision : "—" }),
      h("td", { "data-label": "Namespaces", text: info ? info.namespaces.length : "—" }),
      h("td", { "data-label": "State" }, info ? h("span", { class: "badge green", text: "live" }) : h("span", { class: "badge gray", text: "deleted" })),
      h("td", { "data-label": "Your rights", text: [...rightsOn(t)].sort().join(", ") }),
    );
  });
  const node = h(
    "section",
    {},
    h("h1", { text: "Tenants" }),
    rows.length
      ? table(["Tenant", "Revision", "Namespaces", "State", "Your rights"], rows)
      : empty("This token sees no tenant."),
  );
  return { node };
}

function table(headers, rows, opts = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: `grid ${opts.cls || ""}`, "aria-label": opts.label },
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", text: x })))),
      h("tbody", {}, rows),
    ),
  );
}

async function tenantView(r) {
  const t = r.tenant;
  const body = h("div");
  async function load() {
    const info = await api("GET", T(t));
    state.infos.set(t, info);
    renderSidebar();
    const nsRows = info.namespaces.map((ns) =>
      h("tr", {}, h("td", { "data-label": "Namespace" }, h("a", { href: `#/t/${enc(t)}/ns/${enc(ns)}`, text: ns }))),
    );
    put(
      body,
      h(
        "dl",
        { class: "facts" },
        h("dt", { text: "Revision" }), h("dd", { text: info.revision }),
        h("dt", { text: "Epoch" }), h("dd", {}, h("code", { text: info.epoch })),
        h("dt", { text: "Created" }), h("dd", { text: fmtTime(info.created_at) }),
        h("dt", { text: "Your rights" }), h("dd", { text: [...rightsOn(t)].sort().join(", ") || "none" }),
      ),
      h("h2", { text: "Namespaces" }),
      nsRows.length ? table(["Namespace"], nsRows, { label: "Namespaces" }) : empty("No namespace yet."),
    );
  }
  await load();
  const node = h(
    "section",
    {},
    crumbs(["Tenants", "#/"], [t]),
    h("h1", { text: t }),
    body,
    h("h2", { text: "New namespace" }),
    newNamespaceForm(t),
  );
  return { node, refresh: () => load() };
}

function newNamespaceForm(t) {
  const input = h("input", { type: "text", autocomplete: "off", pattern: "[A-Za-z0-9_.\\-]{1,128}" });
  const go = button("Open", () => {
    const ns = input.value.trim();
    if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/.test(ns)) {
      toast("A namespace name is 1–128 of A–Z a–z 0–9 _ . - and does not start with a dot.", "error");
      return;
    }
    location.hash = `#/t/${enc(t)}/ns/${enc(ns)}`;
  }, { need: "write", tenant: t });
  return h("div", { class: "inline-form" }, field("Namespace name", input, "It is created by its first published key."), go);
}

// ---------------------------------------------------------------- namespace: keys, edit, publish

function draftOf(t, ns) {
  const id = `${t}/${ns}`;
  let d = state.drafts.get(id);
  if (!d) {
    d = { values: new Map(), deletes: new Set(), base: new Map(), underneath: new Map() };
    state.drafts.set(id, d);
  }
  return d;
}

function draftSize(d) {
  return d.values.size + d.deletes.size;
}

function specFor(schemas, ns, key) {
  const own = schemas[ns] && schemas[ns].keys && schemas[ns].keys[key];
  if (own) return own;
  const dflt = schemas._defaults && schemas._defaults.keys && schemas._defaults.keys[key];
  return dflt || null;
}

function schemaNode(spec) {
  if (!spec) return h("span", { class: "muted", text: "no schema" });
  const bits = [h("span", { class: "badge blue", text: spec.type || "json" })];
  if (spec.sensitive) bits.push(h("span", { class: "badge red", text: "sensitive" }));
  if (spec.category) bits.push(h("span", { class: "badge gray", text: spec.category }));
  const rules = [];
  if (spec.min !== undefined && spec.min !== null) rules.push(`≥ ${spec.min}`);
  if (spec.max !== undefined && spec.max !== null) rules.push(`≤ ${spec.max}`);
  if (spec.max_length) rules.push(`length ≤ ${spec.max_length}`);
  if (spec.choices) rules.push(`one of ${spec.choices.map((c) => json(c)).join(", ")}`);
  if (spec.default !== undefined) rules.push(`default ${json(spec.default)}`);
  if (rules.length) bits.push(h("span", { class: "rules", text: rules.join(" · ") }));
  if (spec.description) bits.push(h("span", { class: "desc", text: spec.description }));
  return h("div", { class: "schema" }, bits);
}

async function loadNamespace(t, ns) {
  const none = { keys: {} };
  const [own, eff, schemas, defaults] = await Promise.all([
    api("GET", NS(t, ns), { query: { consistent: "true" } }),
    api("GET", `${NS(t, ns)}/effective`, { query: { explain: "true" } }).catch(() => none),
    api("GET", `${T(t)}/schemas`).catch(() => ({ schemas: {} })),
    ns === "_defaults" ? Promise.resolve(none) : api("GET", NS(t, "_defaults"), { query: { consistent: "true" } }).catch(() => none),
  ]);
  const rows = new Map();
  const names = new Set([...Object.keys(eff.keys || {}), ...Object.keys(own.keys || {})]);
  for (const key of [...names].sort()) {
    const e = (eff.keys || {})[key];
    const layer = e ? e.layer : "namespace";
    const entry =
      layer === "namespace" ? own.keys[key] : layer === "tenant_defaults" ? defaults.keys[key] : null;
    rows.set(key, {
      key,
      value: e ? e.value : own.keys[key]?.value,
      layer,
      entry: entry || null,
      own: own.keys[key] || null,
      spec: specFor(schemas.schemas || {}, ns, key),
    });
  }
  return { revision: own.revision, rows };
}

async function namespaceView(r) {
  const t = r.tenant;
  const ns = r.ns;
  const draft = draftOf(t, ns);
  let data = await loadNamespace(t, ns);
  const search = h("input", { type: "search", autocomplete: "off", placeholder: "Filter by key or description" });
  const tbody = h("tbody");
  const pending = h("section", { class: "pending", "aria-label": "Pending changes" });
  const revNode = h("span", { class: "badge", text: `revision ${data.revision}` });
  const canWrite = can(t, "write", ns);

  function isMasked(row) {
    return row.value === MASK && (!can(t, "secrets", ns) || (row.spec && row.spec.sensitive));
  }

  function renderRows() {
    const q = search.value.trim().toLowerCase();
    const rows = [];
    const keys = new Set([...data.rows.keys(), ...draft.values.keys()]);
    for (const key of [...keys].sort()) {
      const row = data.rows.get(key) || { key, value: undefined, layer: null, entry: null, own: null, spec: null };
      const desc = (row.spec && row.spec.description) || "";
      if (q && !key.toLowerCase().includes(q) && !desc.toLowerCase().includes(q)) continue;
      const edited = draft.values.has(key);
      const deleted = draft.deletes.has(key);
      const changed = draft.underneath.get(key);
      const valueCell = h("td", { "data-label": "Value" }, valueNode(row.value, { masked: isMasked(row) }));
      if (row.layer === null && row.value === undefined && !edited) put(valueCell, h("span", { class: "muted", text: "unset" }));
      if (edited) {
        add(valueCell, h("div", { class: "draft-value" }, h("span", { class: "badge amber", text: "edited" }), " → ", valueNode(draft.values.get(key))));
      }
      if (deleted) add(valueCell, h("div", { class: "draft-value" }, h("span", { class: "badge red", text: "to be deleted" })));
      if (changed) add(valueCell, h("div", { class: "warn-text", role: "note", text: `Changed underneath: now version ${changed}` }));
      const entry = row.entry;
      const actions = h(
        "td",
        { class: "actions-cell", "data-label": "Actions" },
        button("Edit", () => editKey(key), { need: "write", tenant: t, ns }),
        row.own
          ? button(deleted ? "Undo delete" : "Delete", () => {
              if (deleted) draft.deletes.delete(key);
              else {
                draft.deletes.add(key);
                draft.values.delete(key);
                if (!draft.base.has(key)) draft.base.set(key, row.own.version);
              }
              renderAll();
            }, { need: "write", tenant: t, ns, cls: "secondary" })
          : null,
        row.own ? h("a", { class: "button-link", href: `#/t/${enc(t)}/ns/${enc(ns)}/k/${enc(key)}`, text: "History" }) : null,
      );
      rows.push(
        h(
          "tr",
          { class: `${edited || deleted ? "row-draft" : ""} ${changed ? "row-warn" : ""}`, "data-key": key },
          h("th", { scope: "row", "data-label": "Key" }, h("code", { class: "key", text: key })),
          valueCell,
          h("td", { "data-label": "Layer" }, row.layer ? h("span", { class: `layer layer-${row.layer}`, text: LAYERS[row.layer] || row.layer }) : h("span", { class: "muted", text: edited ? "new" : "—" })),
          h("td", { "data-label": "Version", class: "num", text: entry ? `v${entry.version}` : "—" }),
          h("td", { "data-label": "Updated" }, entry ? h("div", {}, h("div", { text: fmtTime(entry.updated_at) }), h("div", { class: "muted small", text: entry.updated_by })) : "—"),
          h("td", { "data-label": "Schema" }, schemaNode(row.spec)),
          actions,
        ),
      );
    }
    put(tbody, ...rows);
    if (!rows.length) add(tbody, h("tr", {}, h("td", { colspan: "7", class: "empty", text: q ? "No key matches." : "No keys yet." })));
  }

  function renderPending() {
    const n = draftSize(draft);
    if (!n) {
      pending.hidden = true;
      put(pending);
      return;
    }
    pending.hidden = false;
    const items = h("ul", { class: "pending-list" });
    for (const [key, value] of draft.values) {
      add(items, h("li", {}, h("code", { text: key }), " = ", valueNode(value), " ", button("Remove", () => { draft.values.delete(key); draft.base.delete(key); draft.underneath.delete(key); renderAll(); }, { cls: "link", label: `Remove edit of ${key}` })));
    }
    for (const key of draft.deletes) {
      add(items, h("li", {}, h("span", { class: "badge red", text: "delete" }), " ", h("code", { text: key }), " ", button("Remove", () => { draft.deletes.delete(key); draft.base.delete(key); renderAll(); }, { cls: "link", label: `Keep ${key}` })));
    }
    const warn = draft.underneath.size
      ? h("p", { class: "warn-text", role: "alert", text: `Changed by someone else since you started: ${[...draft.underneath.keys()].join(", ")}. Preview to see both versions, then Rebase.` })
      : null;
    put(pending, 
      h("h2", { text: `${n} pending change${n > 1 ? "s" : ""}` }),
      items,
      warn,
      h(
        "div",
        { class: "actions" },
        button("Preview", () => previewDraft(), { cls: "primary", need: "write", tenant: t, ns }),
        button("Discard all", () => {
          draft.values.clear();
          draft.deletes.clear();
          draft.base.clear();
          draft.underneath.clear();
          renderAll();
        }, { cls: "secondary" }),
      ),
    );
  }

  function renderAll() {
    renderRows();
    renderPending();
  }

  async function reload() {
    data = await loadNamespace(t, ns);
    revNode.textContent = `revision ${data.revision}`;
    renderAll();
  }

  function editKey(key, isNew = false) {
    const row = data.rows.get(key);
    const current = row ? row.value : undefined;
    const masked = row ? isMasked(row) : false;
    const start = draft.values.has(key) ? draft.values.get(key) : masked ? undefined : current;
    const keyInput = isNew ? h("input", { type: "text", autocomplete: "off", spellcheck: "false" }) : null;
    const area = h("textarea", { rows: "8", spellcheck: "false", class: "mono" });
    area.value = start === undefined ? "" : json(start, true);
    const problem = h("p", { class: "form-error", role: "alert" });
    const warnBox = h("div", { class: "dialog-warn" });
    const info = [];
    if (row) {
      info.push(h("p", { class: "muted" }, `Current: `, valueNode(current, { masked }), row.own ? ` (version ${row.own.version})` : ` (from ${LAYERS[row.layer] || "no layer"})`));
      info.push(schemaNode(row.spec));
    }
    if (masked) info.push(h("p", { class: "hint", text: "The current value is hidden from this token; what you type replaces it." }));
    const save = () => {
      let name = key;
      if (isNew) {
        name = keyInput.value.trim();
        if (!/^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/.test(name)) {
          problem.textContent = "A key name is 1–128 of A–Z a–z 0–9 _ . - and does not start with a dot.";
          keyInput.focus();
          return;
        }
        if (data.rows.get(name)?.own || draft.values.has(name)) {
          problem.textContent = "That key exists already: use its Edit button.";
          return;
        }
      }
      let value;
      try {
        value = JSON.parse(area.value);
      } catch {
        problem.textContent = 'Not valid JSON. Strings need double quotes, e.g. "text"; numbers, true, false, null, [..] and {..} are fine.';
        area.focus();
        return;
      }
      draft.values.set(name, value);
      draft.deletes.delete(name);
      if (!draft.base.has(name)) draft.base.set(name, isNew ? data.rows.get(name)?.own?.version || 0 : startVersion);
      if (editing.changedTo) draft.underneath.set(name, editing.changedTo);
      closeDialog();
      renderAll();
    };
    const startVersion = draft.base.has(key) ? draft.base.get(key) : row?.own?.version || 0;
    const editing = { tenant: t, ns, key, base: startVersion, changedTo: 0, warn: (text) => put(warnBox, h("p", { class: "warn-text", role: "alert", text })) };
    state.editing = editing;
    const under = draft.underneath.get(key);
    if (under) state.editing.warn(`This key changed underneath: now version ${under}.`);
    openDialog(isNew ? "Add key" : `Edit ${key}`, [
      ...info,
      warnBox,
      keyInput ? field("Key", keyInput) : null,
      field("Value", area, "JSON: \"text\", 30, true, null, [1, 2], {\"a\": 1}"),
      problem,
    ], [
      button(isNew ? "Add to changes" : "Keep edit", save, { cls: "primary" }),
      button("Cancel", () => closeDialog(), { cls: "secondary" }),
    ], { onClose: () => { state.editing = null; }, focus: keyInput || area });
  }

  async function previewDraft() {
    const body = {
      values: Object.fromEntries(draft.values),
      deletes: [...draft.deletes],
      expect: Object.fromEntries(draft.base),
    };
    const reason = h("input", { type: "text", autocomplete: "off", maxlength: "500" });
    const area = h("div", { class: "preview" }, h("p", { class: "muted", text: "Checking…" }));
    const publish = button("Publish", () => doPublish(), { cls: "primary" });
    deny(publish, "Waiting for the preview");
    openDialog(`Review changes to ${t}/${ns}`, [area, field("Reason", reason, "Recorded in the history and the change log.")], [
      publish,
      button("Cancel", () => closeDialog(), { cls: "secondary" }),
    ], { wide: true, focus: reason });

    async function runPreview() {
      body.expect = Object.fromEntries(draft.base);
      let doc;
      try {
        doc = await api("POST", NS(t, ns), { query: { dry_run: "true" }, body });
      } catch (err) {
        put(area, problemsNode(err));
        deny(publish, "Fix the problems listed first");
        return;
      }
      const rows = doc.changes.map((c) =>
        h(
          "tr",
          { class: `change-${c.change}` },
          h("th", { scope: "row", "data-label": "Key" }, h("code", { text: c.key })),
          h("td", { "data-label": "Change" }, h("span", { class: `badge ${badgeFor(c.change)}`, text: c.change })),
          h("td", { "data-label": "Old" }, c.change === "added" ? h("span", { class: "muted", text: "—" }) : valueNode(c.old, { masked: c.old === MASK }), c.old_version ? h("span", { class: "muted small", text: ` v${c.old_version}` }) : null),
          h("td", { "data-label": "→", class: "arrow", "aria-hidden": "true", text: "→" }),
          h("td", { "data-label": "New" }, c.change === "removed" ? h("span", { class: "badge gray", text: "deleted" }) : valueNode(c.new, { masked: c.new === MASK })),
        ),
      );
      const parts = [
        h("p", { class: "muted", text: `Dry run at revision ${doc.revision}: nothing is written until you publish.` }),
        table(["Key", "Change", "Old", "", "New"], rows, { cls: "diff", label: "Changes" }),
      ];
      if (doc.conflicts.length) {
        parts.push(await conflictNode(doc.conflicts));
        deny(publish, "Rebase on the current versions first");
      } else {
        allow(publish);
      }
      put(area, ...parts);
    }

    async function conflictNode(conflicts) {
      let current = { keys: {} };
      try {
        current = await api("GET", NS(t, ns), { query: { consistent: "true" } });
      } catch {
        // the listing below still names the versions
      }
      const rows = conflicts.map((c) => {
        const cur = current.keys[c.key];
        const yours = draft.deletes.has(c.key) ? h("span", { class: "badge red", text: "delete" }) : valueNode(draft.values.get(c.key));
        return h(
          "tr",
          {},
          h("th", { scope: "row", "data-label": "Key" }, h("code", { text: c.key })),
          h("td", { "data-label": "Yours" }, yours, h("div", { class: "muted small", text: `based on version ${c.expected}` })),
          h("td", { "data-label": "Current" }, cur ? valueNode(cur.value, { masked: cur.value === MASK }) : h("span", { class: "muted", text: "absent" }), h("div", { class: "muted small", text: cur ? `version ${cur.version} by ${cur.updated_by}, ${fmtTime(cur.updated_at)}` : `version ${c.actual}` })),
        );
      });
      return h(
        "div",
        { class: "conflict", role: "alert" },
        h("h3", { text: "Conflict: changed since you started editing" }),
        table(["Key", "Yours", "Current"], rows, { label: "Conflicts" }),
        h("div", { class: "actions" }, button("Rebase", async () => {
          for (const c of conflicts) {
            draft.base.set(c.key, c.actual);
            draft.underneath.delete(c.key);
          }
          await reload();
          put(area, h("p", { class: "muted", text: "Rebased on the current versions; checking again…" }));
          await runPreview();
        }, { cls: "primary", label: "Rebase" }), h("span", { class: "hint", text: " Rebase keeps your edits and takes the current versions as their base." })),
      );
    }

    async function doPublish() {
      body.expect = Object.fromEntries(draft.base);
      body.reason = reason.value.trim();
      deny(publish, "Publishing…");
      try {
        const res = await api("POST", NS(t, ns), { body });
        const versions = Object.entries(res.versions).map(([k, v]) => `${k} v${v}`).join(", ");
        toast(`Published revision ${res.revision}: ${versions}`);
        draft.values.clear();
        draft.deletes.clear();
        draft.base.clear();
        draft.underneath.clear();
        closeDialog();
        await reload();
        refreshInfo(t);
      } catch (err) {
        if (err instanceof ApiError && (err.status === 409 || err.status === 412) && err.body.conflicts) {
          put(area, await conflictNode(err.body.conflicts));
          deny(publish, "Rebase on the current versions first");
        } else {
          put(area, problemsNode(err));
          deny(publish, "Fix the problems listed first");
        }
      }
    }

    await runPreview();
  }

  search.addEventListener("input", renderRows);
  renderAll();
  const node = h(
    "section",
    {},
    crumbs(["Tenants", "#/"], [t, `#/t/${enc(t)}`], [ns]),
    h("div", { class: "title-row" }, h("h1", { text: ns }), revNode),
    h(
      "div",
      { class: "toolbar" },
      field("Search keys", search),
      h("span", { class: "spacer" }),
      button("Add key", () => editKey("", true), { need: "write", tenant: t, ns }),
      h("a", { class: "button-link", href: `#/t/${enc(t)}/time`, text: "Time travel" }),
    ),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "grid keys", "aria-label": `Keys of ${ns}` },
        h("thead", {}, h("tr", {}, ["Key", "Value", "Layer", "Version", "Updated", "Schema", "Actions"].map((x) => h("th", { scope: "col", text: x })))),
        tbody,
      ),
    ),
    pending,
    canWrite ? null : h("p", { class: "muted", text: "This token can read but not write here." }),
  );
  return {
    node,
    refresh: async (ev) => {
      if (ev.type === "reset" || ev.type === "schema") {
        await reload();
        return;
      }
      const touched = ev.changes.filter((c) => (c.namespace || ev.namespace) === ns || ev.namespace === "_defaults");
      if (!touched.length) return;
      for (const c of touched) {
        if ((c.namespace || ev.namespace) !== ns) continue;
        const base = draft.base.get(c.key);
        if (base !== undefined && c.version !== base) draft.underneath.set(c.key, c.version);
        const ed = state.editing;
        if (ed && ed.key === c.key && ed.ns === ns && ed.tenant === t && c.version !== ed.base) {
          ed.changedTo = c.version;
          ed.warn(`This key changed underneath while you edit: now version ${c.version} (by ${ev.actor}).`);
        }
      }
      await reload();
    },
  };
}

function badgeFor(change) {
  return { added: "green", changed: "amber", removed: "red", unchanged: "gray" }[change] || "gray";
}

function problemsNode(err) {
  const problems = (err instanceof ApiError && err.body.problems) || [];
  if (!problems.length) return h("p", { class: "form-error", role: "alert", text: errorText(err) });
  return h(
    "div",
    { class: "problems", role: "alert" },
    h("h3", { text: `${problems.length} problem${problems.length > 1 ? "s" : ""} with the schema` }),
    h("ul", {}, problems.map((p) => h("li", {}, h("code", { text: p.key || p.field || "" }), `: ${p.message}`, p.rule ? h("span", { class: "muted small", text: ` (${p.rule})` }) : null))),
  );
}

// ---------------------------------------------------------------- key history, diff, roll back

function lineDiff(a, b) {
  const x = a.split("\n");
  const y = b.split("\n");
  const n = x.length;
  const m = y.length;
  if (n * m > 250000) return [...x.map((l) => ["-", l]), ...y.map((l) => ["+", l])];
  const dp = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--) dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) out.push(["-", x[i++]]);
    else out.push(["+", y[j++]]);
  }
  while (i < n) out.push(["-", x[i++]]);
  while (j < m) out.push(["+", y[j++]]);
  return out;
}

function diffNode(before, after, labels = ["before", "after"]) {
  const a = before === undefined ? "" : json(before, true);
  const b = after === undefined ? "" : json(after, true);
  const pre = h("pre", { class: "diff-lines", "aria-label": `Changes from ${labels[0]} to ${labels[1]}` });
  for (const [op, line] of lineDiff(a, b)) {
    add(pre, h("span", { class: op === "+" ? "add" : op === "-" ? "del" : "same" }, `${op} ${line}\n`));
  }
  return h("div", { class: "diff-box" }, h("div", { class: "diff-legend" }, h("span", { class: "del", text: `− ${labels[0]}` }), " ", h("span", { class: "add", text: `+ ${labels[1]}` })), pre);
}

async function keyView(r) {
  const { tenant: t, ns, key } = r;
  let versions = [];
  let nextBefore = null;
  async function load(before) {
    const doc = await api("GET", `${NS(t, ns)}/keys/${enc(key)}/history`, { query: { limit: 50, before } });
    versions = before ? versions.concat(doc.versions) : doc.versions;
    nextBefore = doc.next_before;
  }
  await load();
  const body = h("div");
  const fromSel = h("select");
  const toSel = h("select");
  const diffArea = h("div", { class: "diff-area" });

  function byVersion(v) {
    return versions.find((x) => x.version === Number(v));
  }

  function showDiff() {
    const a = byVersion(fromSel.value);
    const b = byVersion(toSel.value);
    if (!a || !b) return;
    put(diffArea, diffNode(a.deleted ? undefined : a.value, b.deleted ? undefined : b.value, [`version ${a.version}`, `version ${b.version}`]));
  }

  function render() {
    const current = versions[0];
    const rows = versions.map((v) =>
      h(
        "tr",
        { class: v === current ? "row-current" : "" },
        h("th", { scope: "row", "data-label": "Version", class: "num", text: `v${v.version}` }),
        h("td", { "data-label": "Value" }, valueNode(v.value, { masked: v.value === MASK, deleted: v.deleted })),
        h("td", { "data-label": "When", text: fmtTime(v.updated_at) }),
        h("td", { "data-label": "Who", text: v.updated_by }),
        h("td", { "data-label": "Why", text: v.reason || "—" }),
        h("td", { "data-label": "Revision", class: "num", text: v.revision }),
        h("td", { "data-label": "Actions" }, v === current
          ? h("span", { class: "badge green", text: "current" })
          : button("Roll back", () => rollbackKey(v), { need: "write", tenant: t, ns, label: `Roll back to version ${v.version}` })),
      ),
    );
    const opts = (sel, pick) => {
      const keep = sel.value;
      put(sel, ...versions.map((v) => h("option", { value: v.version, text: `version ${v.version}${v.deleted ? " (deleted)" : ""}` })));
      sel.value = keep && byVersion(keep) ? keep : pick;
    };
    opts(fromSel, String((versions[1] || versions[0]).version));
    opts(toSel, String(versions[0].version));
    put(body, 
      table(["Version", "Value", "When", "Who", "Why", "Revision", "Actions"], rows, { label: `Versions of ${key}` }),
      nextBefore ? button("Older versions", async () => { await load(nextBefore); render(); }, { cls: "secondary" }) : null,
      h("h2", { text: "Compare versions" }),
      h("div", { class: "toolbar" }, field("From version", fromSel), field("To version", toSel)),
      diffArea,
    );
    showDiff();
  }

  function rollbackKey(v) {
    const current = versions[0];
    const reason = h("input", { type: "text", autocomplete: "off" });
    const confirm = button("Confirm roll back", async () => {
      deny(confirm, "Rolling back…");
      try {
        const res = await api("POST", `${NS(t, ns)}/keys/${enc(key)}/rollback`, {
          body: { to_version: v.version, expect_version: current.version, reason: reason.value.trim() },
        });
        toast(`Rolled ${key} back to version ${v.version}: now version ${res.versions[key]} (revision ${res.revision})`);
        closeDialog();
        await load();
        render();
      } catch (err) {
        allow(confirm);
        put(errBox, h("p", { class: "form-error", role: "alert", text: errorText(err) }));
      }
    }, { cls: "danger" });
    const errBox = h("div");
    openDialog(`Roll back ${key} to version ${v.version}?`, [
      h("p", { text: `This writes version ${v.version}'s value as a new version (current: version ${current.version}). Preview:` }),
      diffNode(current.deleted ? undefined : current.value, v.deleted ? undefined : v.value, [`now (v${current.version})`, `after roll back`]),
      field("Reason", reason),
      errBox,
    ], [confirm, button("Cancel", () => closeDialog(), { cls: "secondary" })], { wide: true, focus: reason });
  }

  fromSel.addEventListener("change", showDiff);
  toSel.addEventListener("change", showDiff);
  render();
  const node = h(
    "section",
    {},
    crumbs(["Tenants", "#/"], [t, `#/t/${enc(t)}`], [ns, `#/t/${enc(t)}/ns/${enc(ns)}`], [key]),
    h("h1", { text: `History of ${key}` }),
    body,
  );
  return {
    node,
    refresh: async (ev) => {
      if (ev.type === "reset" || ev.changes.some((c) => c.key === key && (c.namespace || ev.namespace) === ns)) {
        await load();
        render();
      }
    },
  };
}

// ---------------------------------------------------------------- change log

async function logView(r) {
  const t = r.tenant;
  const node = h("section", {}, crumbs(["Tenants", "#/"], [t, `#/t/${enc(t)}`], ["Change log"]), h("h1", { text: `Change log of ${t}` }));
  const body = h("div");
  add(node, body);
  await loadLog(t, body);
  return { node, refresh: () => loadLog(t, body) };
}

async function loadLog(t, body) {
  const info = await api("GET", T(t));
  let since = Math.max(0, info.revision - 100);
  let doc;
  try {
    doc = await api("GET", `${T(t)}/log`, { query: { since, limit: 100 } });
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 410)) throw err;
    since = err.body.oldest ? err.body.oldest - 1 : info.revision;
    doc = await api("GET", `${T(t)}/log`, { query: { since, limit: 100 } });
  }
  const rows = doc.events.slice().reverse().map((ev) =>
    h(
      "tr",
      {},
      h("th", { scope: "row", "data-label": "Revision", class: "num" }, h("a", { href: `#/t/${enc(t)}/time/${ev.revision}`, text: ev.revision, title: "Time travel to this revision" })),
      h("td", { "data-label": "When", text: fmtTime(ev.ts) }),
      h("td", { "data-label": "Namespace" }, ev.namespace && ev.namespace !== "*" ? h("a", { href: `#/t/${enc(t)}/ns/${enc(ev.namespace)}`, text: ev.namespace }) : ev.namespace || "—"),
      h("td", { "data-label": "Changes" }, ev.type !== "change" ? h("span", { class: "badge gray", text: ev.type }) : h("ul", { class: "plain" }, ev.changes.map((c) => h("li", {}, h("code", { text: c.namespace ? `${c.namespace}/${c.key}` : c.key }), c.deleted ? " deleted" : ` v${c.old_version}→v${c.version}`)))),
      h("td", { "data-label": "Who", text: ev.actor }),
      h("td", { "data-label": "Why", text: ev.reason || "—" }),
    ),
  );
  put(
    body,
    h("p", { class: "muted", text: `Newest first; revisions after ${since}. Pick a revision to see the tenant as it was.` }),
    rows.length ? table(["Revision", "When", "Namespace", "Changes", "Who", "Why"], rows, { label: "Change log" }) : empty("No changes in this range."),
  );
}

// ---------------------------------------------------------------- time travel & roll back

async function timeView(r) {
  const t = r.tenant;
  const info = await api("GET", T(t));
  const revInput = h("input", { type: "number", min: "0", max: String(info.revision), inputmode: "numeric" });
  revInput.value = String(r.revision !== undefined && !Number.isNaN(r.revision) ? r.revision : Math.max(0, info.revision - 1));
  const nsSel = h("select", {}, h("option", { value: "", text: "The whole tenant" }), info.namespaces.map((ns) => h("option", { value: ns, text: ns })));
  const out = h("div", { class: "time-out" });

  async function show() {
    const rev = Number(revInput.value);
    const ns = nsSel.value || null;
    put(out, h("p", { class: "muted", text: "Loading…" }));
    try {
      const names = ns ? [ns] : info.namespaces;
      const states = await Promise.all(names.map((n) => api("GET", NS(t, n), { query: { at_revision: rev } })));
      const diff = await api("GET", ns ? `${NS(t, ns)}/diff` : `${T(t)}/diff`, { query: { from: rev } });
      const stateRows = [];
      states.forEach((s, i) => {
        for (const [k, e] of Object.entries(s.keys)) {
          stateRows.push(h("tr", {}, h("td", { "data-label": "Namespace", text: names[i] }), h("th", { scope: "row", "data-label": "Key" }, h("code", { text: k })), h("td", { "data-label": "Value" }, valueNode(e.value, { masked: e.value === MASK })), h("td", { "data-label": "Version", class: "num", text: `v${e.version}` }), h("td", { "data-label": "Updated", text: fmtTime(e.updated_at) })));
        }
      });
      const scope = ns ? `namespace ${ns}` : `tenant ${t}`;
      const need = ns ? "write" : "admin";
      put(out, 
        h("h2", { text: `${ns ? ns : t} as of revision ${rev}` }),
        stateRows.length ? table(["Namespace", "Key", "Value", "Version", "Updated"], stateRows, { label: `State at revision ${rev}` }) : empty("Nothing existed at that revision."),
        h("h2", { text: `What changed since revision ${rev}` }),
        diff.changes.length ? rollbackDiffTable(diff.changes) : empty("Nothing changed since then."),
        h("div", { class: "actions" }, button("Roll back", () => confirmRollback(rev, ns, diff.changes, scope), {
          cls: "danger", need, tenant: t, deny: diff.changes.length ? undefined : "Nothing to roll back", label: `Roll back ${scope} to revision ${rev}`,
        })),
      );
    } catch (err) {
      put(out, h("p", { class: "form-error", role: "alert", text: errorText(err) }));
    }
  }

  function confirmRollback(rev, ns, changes, scope) {
    const reason = h("input", { type: "text", autocomplete: "off" });
    const errBox = h("div");
    const confirm = button("Confirm roll back", async () => {
      deny(confirm, "Rolling back…");
      try {
        const res = await api("POST", `${T(t)}/rollback`, { body: { to_revision: rev, namespace: ns, reason: reason.value.trim() } });
        const revs = res.commits.map((c) => c.revision).join(", ");
        toast(`Rolled ${scope} back to revision ${rev}${revs ? ` (new revision ${revs})` : ""}`);
        closeDialog();
        await refreshInfo(t);
        await show();
      } catch (err) {
        allow(confirm);
        put(errBox, h("p", { class: "form-error", role: "alert", text: errorText(err) }));
      }
    }, { cls: "danger" });
    openDialog(`Roll back ${scope} to revision ${rev}?`, [
      h("p", { text: "These keys go back to their values at that revision, as one new revision (every key checked against its current version):" }),
      rollbackDiffTable(changes),
      field("Reason", reason),
      errBox,
    ], [confirm, button("Cancel", () => closeDialog(), { cls: "secondary" })], { wide: true, focus: reason });
  }

  const form = h("form", { class: "toolbar" }, field("Revision", revInput), field("Scope", nsSel), h("button", { type: "submit", class: "primary", text: "Show" }));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    history.replaceState(null, "", `#/t/${enc(t)}/time/${Number(revInput.value)}`);
    show();
  });
  const node = h(
    "section",
    {},
    crumbs(["Tenants", "#/"], [t, `#/t/${enc(t)}`], ["Time travel"]),
    h("h1", { text: `Time travel in ${t}` }),
    h("p", { class: "muted", text: `Current revision: ${info.revision}. See a namespace or the whole tenant as it was, and roll back to it.` }),
    form,
    out,
  );
  await show();
  return { node };
}

function rollbackDiffTable(changes) {
  const rows = changes.map((c) => {
    const restored = c.old ? valueNode(c.old.value, { masked: c.old.value === MASK }) : h("span", { class: "badge red", text: "deleted" });
    const now = c.new ? valueNode(c.new.value, { masked: c.new.value === MASK }) : h("span", { class: "muted", text: "absent" });
    return h(
      "tr",
      {},
      h("td", { "data-label": "Namespace", text: c.namespace }),
      h("th", { scope: "row", "data-label": "Key" }, h("code", { text: c.key })),
      h("td", { "data-label": "Now" }, now, c.new ? h("span", { class: "muted small", text: ` v${c.new.version}` }) : null),
      h("td", { "data-label": "→", class: "arrow", "aria-hidden": "true", text: "→" }),
      h("td", { "data-label": "After roll back" }, restored),
    );
  });
  return table(["Namespace", "Key", "Now", "", "After roll back"], rows, { cls: "diff", label: "Roll back preview" });
}

// ---------------------------------------------------------------- fleet

async function fleetView(r) {
  const t = r.tenant;
  const body = h("div");
  async function load() {
    const [info, doc] = await Promise.all([api("GET", T(t)), api("GET", `${T(t)}/fleet`)]);
    const now = Date.now() / 1000;
    const rows = doc.watchers.map((w) => {
      const behind = Math.max(0, info.revision - w.revision);
      const bad = w.stale || behind > 0;
      return h(
        "tr",
        { class: bad ? "row-warn" : "" },
        h("th", { scope: "row", "data-label": "Instance" }, h("code", { text: w.instance })),
        h("td", { "data-label": "Host", text: `${w.host} (pid ${w.pid})` }),
        h("td", { "data-label": "Applied revision", class: "num", text: w.revision }),
        h("td", { "data-label": "Behind", class: "num", text: behind ? `${behind} revision${behind > 1 ? "s" : ""}` : "0" }),
        h("td", { "data-label": "Status" }, w.stale ? h("span", { class: "badge red", text: "stale" }) : behind ? h("span", { class: "badge amber", text: "behind" }) : h("span", { class: "badge green", text: "in step" })),
        h("td", { "data-label": "Last report", text: `${Math.max(0, Math.round(now - w.reported_at))} s ago` }),
        h("td", { "data-label": "Namespaces", text: w.namespaces && w.namespaces.length ? w.namespaces.join(", ") : "all" }),
      );
    });
    put(body, 
      h("p", { class: "muted", text: `Tenant revision ${info.revision}. Refreshes every 5 s.` }),
      rows.length ? table(["Instance", "Host", "Applied revision", "Behind", "Status", "Last report", "Namespaces"], rows, { label: "Watchers" }) : empty("No watcher reported in the last 15 seconds."),
    );
  }
  await load();
  const timer = setInterval(() => load().catch(() => {}), 5000);
  const node = h("section", {}, crumbs(["Tenants", "#/"], [t, `#/t/${enc(t)}`], ["Fleet"]), h("h1", { text: `Fleet of ${t}` }), body);
  return { node, close: () => clearInterval(timer), refresh: () => load().catch(() => {}) };
}

// ---------------------------------------------------------------- snapshots

async function snapshotsView(r) {
  const t = r.tenant;
  const node = h("section", {}, crumbs(["Tenants", "#/"], [t, `#/t/${enc(t)}`], ["Snapshots"]), h("h1", { text: `Snapshots of ${t}` }));
  if (!can(t, "admin")) {
    add(node, empty(`Snapshots need the admin right on ${t}.`));
    return { node };
  }
  const body = h("div");
  const label = h("input", { type: "text", autocomplete: "off", pattern: "[A-Za-z0-9_.\\-]*", maxlength: "64" });
  async function load() {
    const doc = await api("GET", `${T(t)}/snapshots`);
    const rows = doc.snapshots.slice().reverse().map((s) =>
      h(
        "tr",
        {},
        h("th", { scope: "row", "data-label": "Name" }, h("code", { text: s.name })),
        h("td", { "data-label": "Created", text: fmtTime(s.created_at) }),
        h("td", { "data-label": "Label", text: s.label || "—" }),
        h("td", { "data-label": "Revision", class: "num", text: s.tenant.revision }),
        h("td", { "data-label": "Keys", class: "num", text: s.tenant.keys }),
        h("td", { "data-label": "Actions", class: "actions-cell" },
          button("Verify", () => verify(s), { cls: "secondary", label: `Verify ${s.name}` }),
          button("Restore", () => restore(s), { cls: "danger", label: `Restore ${s.name}` })),
      ),
    );
    put(body, rows.length ? table(["Name", "Created", "Label", "Revision", "Keys", "Actions"], rows, { label: "Snapshots" }) : empty("No snapshot holds this tenant yet."));
  }
  async function verify(s) {
    try {
      const res = await api("POST", `${T(t)}/snapshots/${enc(s.name)}/verify`);
      toast(`${s.name}: checksum and contents verified (${res.size} bytes)`);
    } catch (err) {
      toast(`${s.name}: ${errorText(err)}`, "error");
    }
  }
  async function restore(s) {
    const mode = h("select", {}, h("option", { value: "replace", text: "replace: make the tenant exactly the snapshot" }), h("option", { value: "merge", text: "merge: write the snapshot's keys, keep others" }));
    const reportBox = h("div", { class: "preview" });
    const confirm = button("Confirm restore", async () => {
      deny(confirm, "Restoring…");
      try {
        const res = await api("POST", `${T(t)}/snapshots/${enc(s.name)}/restore`, { query: { mode: mode.value } });
        const row = res.restored[0];
        toast(`Restored ${t} from ${s.name}: now revision ${row ? row.revision : "?"}`);
        closeDialog();
        await refreshInfo(t);
        await load();
      } catch (err) {
        allow(confirm);
        add(reportBox, h("p", { class: "form-error", role: "alert", text: errorText(err) }));
      }
    }, { cls: "danger" });
    async function dry() {
      deny(confirm, "Waiting for the dry run");
      put(reportBox, h("p", { class: "muted", text: "Dry run…" }));
      try {
        const res = await api("POST", `${T(t)}/snapshots/${enc(s.name)}/restore`, { query: { mode: mode.value, dry_run: "true" } });
        const row = res.restored[0];
        put(reportBox, 
          h("p", { text: `Dry run (nothing written yet): ${t} goes from revision ${row.live_revision} to ${row.revision}; the snapshot was taken at revision ${row.file_revision}.` }),
          h("dl", { class: "facts counts", "aria-label": "Restore dry run" },
            h("dt", { text: "Added" }), h("dd", { text: row.added }),
            h("dt", { text: "Changed" }), h("dd", { text: row.changed }),
            h("dt", { text: "Removed" }), h("dd", { text: row.removed }),
            h("dt", { text: "Unchanged" }), h("dd", { text: row.unchanged })),
          h("p", { class: "hint", text: "A safety snapshot of the current state is saved before the restore; watchers resynchronise." }),
        );
        allow(confirm);
      } catch (err) {
        put(reportBox, h("p", { class: "form-error", role: "alert", text: errorText(err) }));
      }
    }
    mode.addEventListener("change", dry);
    openDialog(`Restore ${t} from ${s.name}?`, [field("Mode", mode), reportBox], [confirm, button("Cancel", () => closeDialog(), { cls: "secondary" })], { wide: true, focus: mode });
    await dry();
  }
  const save = button("Save snapshot", async () => {
    try {
      const res = await api("POST", `${T(t)}/snapshots`, { query: { label: label.value.trim() || undefined } });
      toast(`Saved ${res.name}`);
      await load();
    } catch (err) {
      toast(errorText(err), "error");
    }
  }, { cls: "primary" });
  await load();
  add(node, h("div", { class: "toolbar" }, field("Label", label, "Optional: letters, digits, _ . -"), save), body);
  return { node };
}

// ---------------------------------------------------------------- tokens

async function tokensView() {
  const node = h("section", {}, h("h1", { text: "API tokens" }));
  const body = h("div");
  const globalAdmin = (state.me.grants["*"] || []).includes("admin");
  async function load() {
    const doc = await api("GET", "/api/v1/tokens");
    const rows = doc.tokens.map((tk) =>
      h(
        "tr",
        {},
        h("th", { scope: "row", "data-label": "Name" }, h("code", { text: tk.name })),
        h("td", { "data-label": "Grants" }, h("ul", { class: "plain" }, Object.entries(tk.grants).map(([tn, rs]) => h("li", {}, h("strong", { text: tn }), `: ${rs.join(", ")}`)))),
        h("td", { "data-label": "Created", text: `${fmtTime(tk.created_at)}${tk.created_by ? ` by ${tk.created_by}` : ""}` }),
        h("td", { "data-label": "Expires", text: tk.expires_at ? fmtTime(tk.expires_at) : "never" }),
        h("td", { "data-label": "Last used", text: tk.last_used_at ? fmtTime(tk.last_used_at) : "—" }),
        h("td", { "data-label": "Actions" }, button("Revoke", () => revoke(tk.name), { cls: "danger", label: `Revoke ${tk.name}` })),
      ),
    );
    put(body, rows.length ? table(["Name", "Grants", "Created", "Expires", "Last used", "Actions"], rows, { label: "Tokens" }) : empty("No token you administer."));
  }
  function revoke(name) {
    const confirm = button("Confirm revoke", async () => {
      try {
        await api("DELETE", `/api/v1/tokens/${enc(name)}`);
        toast(`Revoked ${name}`);
        closeDialog();
        await load();
      } catch (err) {
        put(errBox, h("p", { class: "form-error", role: "alert", text: errorText(err) }));
      }
    }, { cls: "danger" });
    const errBox = h("div");
    openDialog(`Revoke ${name}?`, [h("p", { text: "Every client using this token loses access (within 2 s on other server processes)." }), errBox], [confirm, button("Cancel", () => closeDialog(), { cls: "secondary" })]);
  }

  const nameInput = h("input", { type: "text", autocomplete: "off" });
  const grants = h("div", { class: "grants" });
  const expiresInput = h("input", { type: "number", min: "1", step: "1", inputmode: "numeric" });
  const tenantsList = h("datalist", { id: "tenant-names" }, (globalAdmin ? ["*"] : []).concat(state.tenants.filter((t) => can(t, "admin"))).map((t) => h("option", { value: t })));
  function grantRow() {
    const tn = h("input", { type: "text", list: "tenant-names", autocomplete: "off" });
    const boxes = ["read", "write", "admin", "secrets"].map((r) => {
      const id = nextId("right");
      return h("span", { class: "check" }, h("input", { type: "checkbox", id, value: r, checked: r === "read" }), h("label", { for: id, text: r }));
    });
    const row = h("fieldset", { class: "grant-row" }, h("legend", { text: "Grant" }), field("Scope", tn, "A tenant (acme), one namespace (acme/ai-12), namespaces by prefix (acme/ai-*), or * for every tenant"), h("div", { class: "checks", role: "group", "aria-label": "Rights" }, boxes), button("Remove grant", () => row.remove(), { cls: "link" }));
    add(grants, row);
  }
  grantRow();
  const form = h("form", { class: "card token-form" },
    h("h2", { text: "Create a token" }),
    field("Name", nameInput),
    tenantsList,
    grants,
    field("Expires in (hours)", expiresInput, "Empty: the token never expires (revoke it when done)"),
    h("div", { class: "actions" }, button("Add grant", () => grantRow(), { cls: "secondary" }), h("button", { type: "submit", class: "primary", text: "Create token" })),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const g = {};
    for (const row of grants.querySelectorAll(".grant-row")) {
      const tn = row.querySelector("input[type=text]").value.trim();
      const rs = [...row.querySelectorAll("input[type=checkbox]:checked")].map((x) => x.value);
      if (tn && rs.length) g[tn] = rs;
    }
    try {
      const body = { name: nameInput.value.trim(), grants: g };
      const hours = Number(expiresInput.value);
      if (expiresInput.value.trim() && hours > 0) body.expires_in = Math.round(hours * 3600);
      const res = await api("POST", "/api/v1/tokens", { body });
      const text = h("input", { type: "text", readonly: true, class: "mono token-text" });
      text.value = res.token;
      openDialog(`Token ${res.name} created`, [
        h("p", { class: "warn-text", text: "Copy it now: it is shown this once and stored only as a hash." }),
        field("Token text", text),
      ], [
        button("Copy", async () => {
          try {
            await navigator.clipboard.writeText(res.token);
            toast("Copied");
          } catch {
            text.select();
          }
        }, { cls: "secondary" }),
        button("Done", () => closeDialog(), { cls: "primary" }),
      ], { focus: text });
      text.select();
      nameInput.value = "";
      await load();
    } catch (err) {
      toast(errorText(err), "error");
    }
  });
  await load();
  add(node, body, form);
  return { node };
}

// ---------------------------------------------------------------- dialogs

let dialogOpts = {};
let opener = null;

function openDialog(title, content, actions, opts = {}) {
  const dlg = $("dialog");
  if (dlg.open) dlg.close();
  opener = document.activeElement;
  dialogOpts = opts;
  dlg.classList.toggle("wide", !!opts.wide);
  put(dlg, 
    h("form", { method: "dialog", class: "dialog-body" },
      h("div", { class: "dialog-head" }, h("h2", { id: "dialog-title", text: title }), h("button", { type: "button", class: "icon", "aria-label": "Close", onclick: () => closeDialog() }, "×")),
      h("div", { class: "dialog-content" }, content),
      h("div", { class: "actions dialog-actions" }, actions)),
  );
  dlg.querySelector("form").addEventListener("submit", (e) => e.preventDefault());
  dlg.showModal();
  if (opts.focus) opts.focus.focus();
}

function closeDialog() {
  const dlg = $("dialog");
  if (dlg.open) dlg.close();
}

$("dialog").addEventListener("close", () => {
  if (dialogOpts.onClose) dialogOpts.onClose();
  dialogOpts = {};
  put($("dialog")); // nothing shown once (a new token) stays in the page
  if (opener && document.contains(opener)) opener.focus();
  opener = null;
});

// ---------------------------------------------------------------- live: the tenant's SSE stream

function stopStream() {
  if (state.stream) state.stream.controller.abort();
  state.stream = null;
  setLive("");
}

function setLive(text, kind = "") {
  const el = $("live");
  el.textContent = text;
  el.className = `live ${kind}`;
}

function followTenant(tenant) {
  stopStream();
  const controller = new AbortController();
  const stream = { tenant, controller, last: null };
  state.stream = stream;
  (async () => {
    let delay = 500;
    while (!controller.signal.aborted) {
      try {
        if (stream.last === null) {
          const info = await api("GET", T(tenant));
          stream.last = info.revision;
        }
        const res = await fetch(`${T(tenant)}/watch`, {
          headers: { Accept: "text/event-stream", ...authHeaders(), "Last-Event-ID": String(stream.last) },
          signal: controller.signal,
          cache: "no-store",
        });
        if (res.status === 401 || res.status === 403 || res.status === 404) {
          setLive("Live updates unavailable", "off");
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        setLive("Live", "on");
        delay = 500;
        await readEvents(res.body, (ev) => onEvent(stream, ev));
      } catch (err) {
        if (controller.signal.aborted) return;
      }
      setLive("Reconnecting…", "off");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
}

async function readEvents(body, handle) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let ev = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(buf[nl] === "\r" && buf[nl + 1] === "\n" ? nl + 2 : nl + 1);
      if (line === "") {
        if (ev.data.length) handle({ event: ev.event, data: ev.data.join("\n"), id: ev.id });
        ev = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue; // heartbeat comment
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (name === "event") ev.event = val;
      else if (name === "data") ev.data.push(val);
      else if (name === "id") ev.id = val;
    }
  }
}

let pendingRefresh = null;

function onEvent(stream, raw) {
  if (state.stream !== stream) return;
  if (raw.event === "error") {
    setLive("Live updates stopped", "off");
    return;
  }
  let ev;
  try {
    ev = JSON.parse(raw.data);
  } catch {
    return;
  }
  if (raw.id !== null && raw.id !== "") stream.last = Number(raw.id);
  ev.type = raw.event;
  ev.changes = ev.changes || [];
  const info = state.infos.get(stream.tenant);
  if (info && ev.revision) info.revision = Math.max(info.revision, ev.revision);
  if (raw.event === "reset") toast(`${stream.tenant} was reset (restore): reloaded`, "info");
  else if (raw.event === "change") {
    const keys = ev.changes.map((c) => c.key).join(", ");
    setLive(`Live · r${ev.revision}: ${ev.namespace} ${keys} by ${ev.actor}`, "on");
    if (info && ev.namespace && ev.namespace !== "*" && !info.namespaces.includes(ev.namespace)) {
      info.namespaces = [...info.namespaces, ev.namespace].sort();
    }
  }
  renderSidebar();
  const view = state.view;
  if (view && view.refresh && state.route && state.route.tenant === stream.tenant) {
    // Serialise refreshes: a burst of events costs one reload after another, never a pile.
    pendingRefresh = (pendingRefresh || Promise.resolve()).then(() => view === state.view && view.refresh(ev)).catch(() => {});
  }
}

start();
