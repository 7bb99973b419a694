// The Resources page: reads and acts through the HTTP API only, refreshes itself, and shows a button
// only where the API says the signed-in token may use it (`actions` on each resource).
"use strict";

const state = {
  token: sessionStorage.getItem("rsm-token") || "",
  me: null,
  offset: 0,
  limit: 25,
  total: 0,
  selected: null,
  timer: null,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(s, rid) {
  return el("span", { class: `badge ${s}`, "data-testid": rid ? `state-${rid}` : undefined, text: s });
}

function when(iso) {
  const d = new Date(iso);
  return d.toLocaleString();
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `k-${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  if (!response.ok) {
    const reason = (data && (data.detail || data.error)) || response.statusText;
    const err = new Error(`${response.status}: ${reason}`);
    err.status = response.status;
    throw err;
  }
  return data;
}

function notify(message, isError = false) {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = isError ? "error" : "";
  box.hidden = false;
}

// -- identity ---------------------------------------------------------------------------------

async function loadMe() {
  try {
    state.me = await api("/api/me");
  } catch (err) {
    if (err.status === 401 && state.token) {
      notify(`Token refused: ${err.message}`, true);
      setToken("");
      return loadMe();
    }
    if (err.status === 401) {
      // This server lets nobody read without a token.
      state.me = null;
      document.getElementById("whoami").textContent = "sign in to read";
      notify("This server needs a token to read: sign in.", true);
      return;
    }
    throw err;
  }
  const who = document.getElementById("whoami");
  who.textContent = state.me.authenticated
    ? `signed in as ${state.me.actor} (${state.me.role})`
    : "not signed in: read only";
  document.getElementById("signout").hidden = !state.me.authenticated;
  fillSelect("filter-type", state.me.resource_types);
  fillSelect("filter-state", state.me.states);
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  if (select.options.length > 1) return;
  for (const v of values) select.append(el("option", { value: v, text: v }));
}

function setToken(token) {
  state.token = token;
  if (token) sessionStorage.setItem("rsm-token", token);
  else sessionStorage.removeItem("rsm-token");
}

// -- rendering --------------------------------------------------------------------------------

function actionButtons(resource, actions) {
  return (actions || []).map((action) =>
    el("button", {
      type: "button",
      "data-action": action,
      "data-resource-id": resource.resource_id,
      text: action[0].toUpperCase() + action.slice(1),
      onclick: (event) => { event.stopPropagation(); act(resource, action); },
    }),
  );
}

function renderOverview(overview) {
  const box = document.getElementById("overview");
  box.replaceChildren();
  for (const [type, states] of Object.entries(overview.by_type)) {
    const chips = Object.entries(states).map(([s, n]) =>
      el("span", { class: "chip", "data-testid": `count-${type}-${s}` }, badge(s), ` ${n}`));
    box.append(el("div", { class: "card", "data-testid": `card-${type}` },
      el("h3", { text: type }),
      el("div", { class: "total", "data-testid": `total-${type}`, text: overview.totals[type] || 0 }),
      el("div", { class: "states" }, chips)));
  }
}

function resourceLink(r) {
  return el("a", { href: `#${r.resource_id}`, onclick: (e) => { e.preventDefault(); select(r.resource_id); } },
    r.resource_id);
}

function renderAwaiting(list) {
  document.getElementById("awaiting-count").textContent = `(${list.total})`;
  const body = document.getElementById("awaiting");
  body.replaceChildren(...list.items.map((r) =>
    el("tr", { class: "clickable", "data-resource-id": r.resource_id, onclick: () => select(r.resource_id) },
      el("td", {}, resourceLink(r)),
      el("td", { text: r.resource_type }),
      el("td", {}, badge(r.current_state)),
      el("td", { "data-testid": `waiting-${r.resource_id}` },
        r.waiting_on.length ? r.waiting_on.map((w) => el("span", { class: "chip", text: w })) : r.current_state),
      el("td", { text: r.owner_team || "–" }),
      el("td", { class: "actions" }, actionButtons(r, r.actions)))));
  if (!list.items.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "Nothing waits." })));
}

function renderResources(page) {
  state.total = page.total;
  document.getElementById("list-count").textContent = `(${page.total})`;
  const body = document.getElementById("resources");
  body.replaceChildren(...page.items.map((r) =>
    el("tr", { class: "clickable", "data-resource-id": r.resource_id, onclick: () => select(r.resource_id) },
      el("td", {}, resourceLink(r), r.name !== r.resource_id ? el("div", { class: "muted", text: r.name }) : null),
      el("td", { text: r.resource_type }),
      el("td", {}, badge(r.current_state, r.resource_id)),
      el("td", { text: r.version || "" }),
      el("td", { text: r.owner_team || "–" }),
      el("td", { text: when(r.updated_at) }),
      el("td", { class: "actions" },
        el("a", { href: r.temporal_ui, target: "_blank", rel: "noopener", text: "Temporal" }),
        actionButtons(r, r.actions)))));
  const last = Math.min(page.offset + page.limit, page.total);
  document.getElementById("page-info").textContent =
    page.total ? `${page.offset + 1}–${last} of ${page.total}` : "no resources match";
  document.getElementById("prev").disabled = page.offset === 0;
  document.getElementById("next").disabled = last >= page.total;
}

function renderDetail(detail, transitions) {
  const r = detail.resource;
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-title").replaceChildren(r.resource_id, " ", badge(r.current_state, `detail-${r.resource_id}`));
  const rows = [
    ["type", r.resource_type], ["name", r.name], ["owner", r.owner_team || "–"],
    ["version", r.version || "–"], ["machine", `v${r.machine_version}`],
    ["registered by", r.registered_by], ["updated", when(r.updated_at)],
  ];
  const dl = el("dl", {}, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  dl.append(el("dt", { text: "workflow" }),
    el("dd", {}, el("a", { href: r.temporal_ui, target: "_blank", rel: "noopener", "data-testid": "temporal-link", text: "open in Temporal UI" })));
  if (detail.waiting_on.length) {
    dl.append(el("dt", { text: "waiting on" }), el("dd", {}, detail.waiting_on.map((w) => el("span", { class: "chip", text: w }))));
  }
  for (const q of detail.requirements) {
    dl.append(el("dt", { text: `${q.requirement_type}` }), el("dd", {}, `${q.name}: `, badge(q.status)));
  }
  if (detail.mcp && detail.mcp.endpoint) {
    dl.append(el("dt", { text: "endpoint" }), el("dd", { text: detail.mcp.endpoint }));
  }
  document.getElementById("detail-body").replaceChildren(dl);
  document.getElementById("detail-actions").replaceChildren(...actionButtons(r, r.actions));
  document.getElementById("timeline").replaceChildren(...transitions.items.slice().reverse().map((t) =>
    el("li", { "data-to-state": t.to_state },
      el("div", {}, t.from_state ? badge(t.from_state) : "·", " → ", badge(t.to_state)),
      el("div", { class: "muted", text: `${when(t.recorded_at)} · ${t.actor}${t.reason ? " · " + t.reason : ""}` }))));
}

// -- loading ----------------------------------------------------------------------------------

function listQuery() {
  const params = new URLSearchParams({ limit: state.limit, offset: state.offset });
  const search = document.getElementById("search").value.trim();
  const type = document.getElementById("filter-type").value;
  const st = document.getElementById("filter-state").value;
  const owner = document.getElementById("filter-owner").value.trim();
  if (search) params.set("search", search);
  if (type) params.set("type", type);
  if (st) params.set("state", st);
  if (owner) params.set("owner", owner);
  return params.toString();
}

async function refresh() {
  try {
    const [overview, awaiting, page] = await Promise.all([
      api("/api/resources/overview"),
      api("/api/resources/awaiting-action"),
      api(`/api/resources?${listQuery()}`),
    ]);
    renderOverview(overview);
    renderAwaiting(awaiting);
    renderResources(page);
    if (state.selected) await loadDetail(state.selected);
    document.getElementById("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    notify(`Could not refresh: ${err.message}`, true);
  }
}

async function loadDetail(rid) {
  try {
    const [detail, transitions] = await Promise.all([
      api(`/api/resources/${encodeURIComponent(rid)}`),
      api(`/api/resources/${encodeURIComponent(rid)}/transitions`),
    ]);
    renderDetail(detail, transitions);
  } catch (err) {
    if (err.status === 404) closeDetail();
    else throw err;
  }
}

async function select(rid) {
  state.selected = rid;
  history.replaceState(null, "", `#${rid}`);
  await loadDetail(rid);
}

function closeDetail() {
  state.selected = null;
  document.getElementById("detail").hidden = true;
  history.replaceState(null, "", location.pathname);
}

async function act(resource, action) {
  const reason = document.getElementById("reason").value.trim() || `${action} from the Resources page`;
  const rid = resource.resource_id;
  const path = action === "approve" || action === "reject"
    ? `/api/resources/${encodeURIComponent(rid)}/${action}`
    : `/api/resources/${encodeURIComponent(rid)}/commands/${action}`;
  for (const b of document.querySelectorAll(`button[data-resource-id="${CSS.escape(rid)}"]`)) b.disabled = true;
  try {
    const result = await api(path, { method: "POST", body: { reason }, headers: { "Idempotency-Key": newKey() } });
    notify(`${action} ${rid}: ${result.accepted ? "accepted" : "refused"}${result.message ? " – " + result.message : ""}`, !result.accepted);
  } catch (err) {
    notify(`${action} ${rid} refused: ${err.message}`, true);
  }
  await refresh();
}

function schedule() {
  clearInterval(state.timer);
  const seconds = (state.me && state.me.refresh_seconds) || 3;
  state.timer = setInterval(refresh, seconds * 1000);
}

// -- wiring -----------------------------------------------------------------------------------

document.getElementById("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  setToken(input.value.trim());
  input.value = "";
  await loadMe();
  await refresh();
});
document.getElementById("signout").addEventListener("click", async () => {
  setToken("");
  await loadMe();
  await refresh();
});
document.getElementById("filters").addEventListener("input", () => { state.offset = 0; refresh(); });
document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
document.getElementById("next").addEventListener("click", () => { state.offset += state.limit; refresh(); });
document.getElementById("detail-close").addEventListener("click", closeDetail);

(async function start() {
  await loadMe();
  if (location.hash.length > 1) state.selected = decodeURIComponent(location.hash.slice(1));
  await refresh();
  schedule();
})();
