// omni-ledger console: three views over the JSON API. Data is always put in the page as
// text (never as HTML), and every action is an API call the server authorises.
"use strict";

const state = { token: sessionStorage.getItem("omni-token") || "", role: "anonymous", sites: [], snapshot: null, view: "", asked: {} };

// Each view answers only its latest question: an older response (say, the first store
// in the list, asked before the clerk picked theirs) must never overwrite a newer one.
function latest(name) {
  const ticket = (state.asked[name] = (state.asked[name] || 0) + 1);
  return () => ticket === state.asked[name];
}
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(child ?? "-"));
  return node;
}

async function api(path, options = {}) {
  const headers = { ...(options.body ? { "Content-Type": "application/json" } : {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.message ? body.message : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

const when = (iso) =>
  iso ? new Date(iso).toLocaleString([], { weekday: "short", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit" }) : "-";
const siteName = (id) => (state.sites.find((s) => s.site_id === id) || { name: id }).name || id;
const canAct = () => state.role === "write";

function table(node, columns, rows) {
  node.replaceChildren(
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c.label)))),
    el("tbody", {}, rows.length ? rows.map((row) => el("tr", {}, columns.map((c) => {
      const value = c.value(row);
      return el("td", { class: c.num ? "num" : c.status ? `status-${value}` : "" }, value);
    }))) : el("tr", {}, el("td", { colspan: columns.length }, "nothing here"))),
  );
}

// -- who am I, and the live snapshot -------------------------------------------------------

async function refreshRole() {
  try {
    const me = await api("/v1/whoami");
    state.role = me.role;
  } catch (error) {
    state.role = "anonymous";
  }
  const note = $("role");
  note.className = "note";
  if (state.role === "write") note.textContent = "Signed in: you can reserve and record picks, loads and arrivals.";
  else if (state.role === "read") {
    note.textContent = "Read-only token: you can look, but not reserve or act. Actions are disabled.";
    note.className = "note readonly";
  } else note.textContent = "Not signed in: enter a write token to reserve or act.";
  for (const button of document.querySelectorAll("button[data-action]")) button.disabled = !canAct();
}

async function pollSnapshot() {
  try {
    const health = await fetch("/health").then((r) => r.json());
    const id = health.snapshot_id;
    $("snapshot").textContent =
      id === null ? "snapshot: none yet" : `snapshot ${id} · ${health.snapshot_age_s.toFixed(1)} s old${health.status === "ok" ? "" : " · STALE"}`;
    if (id !== null && id !== state.snapshot) {
      state.snapshot = id;
      render(false);
    }
  } catch (error) {
    $("snapshot").textContent = "snapshot: the server does not answer";
  }
}

// -- availability explorer ----------------------------------------------------------------

function fillStores(select, kinds = ["STORE"]) {
  const current = select.value;
  select.replaceChildren(...state.sites.filter((s) => kinds.includes(s.kind)).map((s) => el("option", { value: s.site_id }, s.name)));
  if (current) select.value = current;
}

async function searchAvailability() {
  const sku = $("sku").value.trim();
  if (!sku) return;
  const from = state.sites.find((s) => s.site_id === $("from-store").value);
  const query = from ? `?lat=${from.lat}&lon=${from.lon}` : "";
  const current = latest("availability");
  try {
    const body = await api(`/v1/skus/${encodeURIComponent(sku)}/availability${query}`);
    if (!current()) return;
    table($("availability"), [
      { label: "Site", value: (r) => r.name || r.site_id },
      { label: "Kind", value: (r) => r.kind },
      { label: "km", value: (r) => (r.distance_km === null ? "-" : r.distance_km.toFixed(1)), num: true },
      { label: "On hand", value: (r) => r.on_hand, num: true },
      { label: "Reserved", value: (r) => r.reserved, num: true },
      { label: "Staged", value: (r) => r.staged, num: true },
      { label: "Inbound (ETA)", value: (r) => r.inbound_lines.map((l) => `${l.qty} ${when(l.eta)}${l.promised ? " (promised)" : ""}`).join(", ") || "-" },
      { label: "ATP", value: (r) => r.atp, num: true },
    ], body.sites);
    $("availability").setAttribute("aria-label", `Availability of ${sku}, snapshot ${body.snapshot_id}`);
  } catch (error) {
    table($("availability"), [{ label: "Error", value: () => error.message }], [{}]);
  }
}

function promiseRequest() {
  const near = state.sites.find((s) => s.site_id === $("customer-near").value);
  const items = $("basket").value.split(",").map((s) => s.trim()).filter(Boolean).map((sku) => ({ sku, qty: 1 }));
  return { items, lat: near.lat, lon: near.lon, appointment: $("appointment").checked };
}

async function findOptions() {
  const request = promiseRequest();
  const current = latest("options");
  try {
    const body = await api("/v1/promise", { method: "POST", body: JSON.stringify(request) });
    if (!current()) return;
    table($("options"), [
      { label: "SKU", value: (o) => o.sku },
      { label: "Option", value: (o) => o.mode.replaceAll("_", " ").toLowerCase() },
      { label: "From", value: (o) => siteName(o.source_id) },
      { label: "To", value: (o) => (o.deliver_to === "HOME" ? "home" : siteName(o.deliver_to)) },
      { label: "Available", value: (o) => when(o.available_at) },
      { label: "Appointment", value: (o) => when(o.appointment_at) },
      { label: "km", value: (o) => o.distance_km.toFixed(1), num: true },
      { label: "Price", value: (o) => (o.price === null ? "-" : o.price.toFixed(2)), num: true },
      { label: "Shuttle run", value: (o) => o.run_id || "-" },
      { label: "", value: (o) => el("button", {
          type: "button", "data-action": "reserve", disabled: !canAct(),
          "aria-label": `Reserve ${o.sku}: ${o.mode.replaceAll("_", " ").toLowerCase()} from ${siteName(o.source_id)}`,
          onclick: () => confirmOption(request, o),
        }, "Reserve") },
    ], body.options);
    table($("together"), [
      { label: "All together at", value: (t) => siteName(t.store_id) },
      { label: "From", value: (t) => when(t.ready_at) },
      { label: "Appointment", value: (t) => when(t.appointment_at) },
      { label: "How", value: (t) => t.legs.map((l) => `${l.sku}: ${l.mode.replaceAll("_", " ").toLowerCase()} from ${siteName(l.source_id)}`).join("; ") },
    ], body.together);
    $("excluded").querySelector("ul").replaceChildren(...body.excluded.map((x) => el("li", {}, `${siteName(x.site_id)} · ${x.sku}: ${x.detail}`)));
  } catch (error) {
    $("confirm-result").textContent = `Could not make a promise: ${error.message}`;
  }
}

async function confirmOption(request, option) {
  $("confirm-result").textContent = `Reserving ${option.sku} from ${siteName(option.source_id)}…`;
  try {
    const body = await api("/v1/confirm", {
      method: "POST",
      body: JSON.stringify({ ...request, option_id: option.option_id, customer: $("customer-name").value.trim() || null }),
    });
    if (body.status === "ACCEPTED") {
      $("confirm-result").textContent = `Reserved: ${body.reservation_id} (${option.sku} ${option.mode.replaceAll("_", " ").toLowerCase()} from ${siteName(option.source_id)})`;
    } else {
      const next = body.next_best ? ` Next best: ${body.next_best.mode.replaceAll("_", " ").toLowerCase()} from ${siteName(body.next_best.source_id)}, ${when(body.next_best.available_at)}.` : "";
      $("confirm-result").textContent = `Not reserved (${body.reason}).${next}`;
    }
  } catch (error) {
    $("confirm-result").textContent = `Not reserved: ${error.message}`;
  }
}

// -- store tasks --------------------------------------------------------------------------

async function loadTasks() {
  const store = $("task-store").value;
  if (!store) return;
  const status = $("task-status").value;
  const current = latest("tasks");
  try {
    const body = await api(`/v1/stores/${encodeURIComponent(store)}/tasks${status ? `?status=${status}` : ""}`);
    if (!current()) return;
    table($("task-list"), [
      { label: "Task", value: (t) => t.kind.replaceAll("_", " ").toLowerCase() },
      { label: "SKU", value: (t) => t.sku },
      { label: "Qty", value: (t) => t.qty, num: true },
      { label: "Zone", value: (t) => t.zone || "-" },
      { label: "Parcel", value: (t) => t.parcel_id || "-" },
      { label: "Shuttle run", value: (t) => t.run_id || "-" },
      { label: "Due", value: (t) => when(t.due_at) },
      { label: "Customer", value: (t) => t.customer || "-" },
      { label: "Status", value: (t) => t.status, status: true },
      { label: "", value: (t) => el("span", {},
          t.kind === "PICK_FOR_SHUTTLE" && t.status === "OPEN"
            ? el("button", { type: "button", "data-action": "picked", disabled: !canAct(), "aria-label": `Mark ${t.sku} picked into parcel ${t.parcel_id}`, onclick: () => act(`/v1/tasks/${encodeURIComponent(t.task_id)}/picked`, "task-result", `Picked: ${t.parcel_id}`) }, "Mark picked")
            : "",
          t.parcel_id ? el("a", { href: `label.html#${encodeURIComponent(t.parcel_id)}`, target: "_blank", rel: "noopener" }, " Print label") : "",
        ) },
    ], body.tasks);
  } catch (error) {
    $("task-result").textContent = error.message;
  }
}

async function act(path, resultId, done) {
  $(resultId).textContent = "Sending…";
  try {
    await api(path, { method: "POST" });
    $(resultId).textContent = `${done}: sent to the ledger; the page updates with the next snapshot.`;
  } catch (error) {
    $(resultId).textContent = `Not done: ${error.message}`;
  }
}

// -- shuttle board ------------------------------------------------------------------------

async function loadBoard() {
  const current = latest("board");
  try {
    const body = await api("/v1/loads");
    if (!current()) return;
    const runs = new Map();
    for (const load of body.loads) {
      if (!runs.has(load.run_id)) runs.set(load.run_id, []);
      runs.get(load.run_id).push(load);
    }
    $("board").replaceChildren(...[...runs.entries()].map(([run, loads]) => {
      const node = el("table", { "aria-label": `Load plan of run ${run}` });
      table(node, [
        { label: "Parcel", value: (x) => x.parcel_id },
        { label: "From", value: (x) => siteName(x.origin) },
        { label: "To", value: (x) => siteName(x.destination) },
        { label: "SKU", value: (x) => x.sku },
        { label: "Qty", value: (x) => x.qty, num: true },
        { label: "Arrives", value: (x) => when(x.arrives_at) },
        { label: "Status", value: (x) => x.status, status: true },
        { label: "", value: (x) =>
            x.status === "PLANNED"
              ? el("button", { type: "button", "data-action": "loaded", disabled: !canAct(), "aria-label": `Mark parcel ${x.parcel_id} loaded`, onclick: () => act(`/v1/loads/${encodeURIComponent(x.parcel_id)}/loaded`, "board-result", `Loaded: ${x.parcel_id}`) }, "Mark loaded")
              : x.status === "LOADED"
                ? el("button", { type: "button", "data-action": "arrived", disabled: !canAct(), "aria-label": `Mark parcel ${x.parcel_id} arrived`, onclick: () => act(`/v1/loads/${encodeURIComponent(x.parcel_id)}/arrived`, "board-result", `Arrived: ${x.parcel_id}`) }, "Mark arrived")
                : "" },
      ], loads);
      return el("section", { class: "run", "aria-label": `Run ${run}` }, el("h3", {}, `${run} · departs ${when(loads[0].departs_at)}`), el("div", { class: "scroll" }, node));
    }));
    if (!runs.size) $("board").replaceChildren(el("p", {}, "No parcel is planned on any shuttle run."));
  } catch (error) {
    $("board-result").textContent = error.message;
  }
}

// -- routing ------------------------------------------------------------------------------

function render(fresh) {
  const view = (location.hash || "#explorer").slice(1);
  for (const name of ["explorer", "tasks", "shuttles"]) {
    $(name).hidden = name !== view;
    const link = $(`nav-${name}`);
    if (name === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "explorer" && $("sku").value) searchAvailability();
  if (view === "tasks") loadTasks();
  if (view === "shuttles") loadBoard();
  if (fresh) $(`${view}-title`)?.focus?.();
}

async function start() {
  $("token").value = state.token;
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem("omni-token", state.token);
    await refreshRole();
    render(false);
  });
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); searchAvailability(); });
  $("promise-form").addEventListener("submit", (event) => { event.preventDefault(); findOptions(); });
  $("tasks-form").addEventListener("change", loadTasks);
  window.addEventListener("hashchange", () => render(true));
  try {
    state.sites = (await api("/v1/network/sites")).sites;
  } catch (error) {
    $("role").textContent = `Cannot read the network: ${error.message}`;
  }
  fillStores($("from-store"));
  fillStores($("customer-near"));
  fillStores($("task-store"));
  await refreshRole();
  render(false);
  pollSnapshot();
  setInterval(pollSnapshot, 1000);
}

start();
