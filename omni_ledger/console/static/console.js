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

const site = (id) => state.sites.find((s) => s.site_id === id);
const siteName = (id) => (site(id) || { name: id }).name || id;
const canAct = () => state.role === "write";
const PAGE = 10; // options, stores and exclusions shown at first; "Show more" adds as many again

// A time as the people at `siteId` read it: in the site's own zone, with its abbreviation
// (the browser's zone when the API does not tell the site's).
function when(iso, siteId) {
  if (!iso) return "-";
  const options = { weekday: "short", day: "2-digit", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short" };
  const zone = site(siteId)?.tz;
  try {
    return new Intl.DateTimeFormat([], zone ? { ...options, timeZone: zone } : options).format(new Date(iso));
  } catch (error) {
    return new Intl.DateTimeFormat([], options).format(new Date(iso)); // an unknown zone name
  }
}

// Columns marked `wide` are hidden on a phone, so the figures and the action stay on screen.
function table(node, columns, rows) {
  const cls = (c, value) => [c.num ? "num" : c.status ? `status-${value}` : "", c.wide ? "wide" : ""].join(" ").trim();
  node.replaceChildren(
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.wide ? "wide" : "" }, c.label)))),
    el("tbody", {}, rows.length ? rows.map((row) => el("tr", {}, columns.map((c) => {
      const value = c.value(row);
      return el("td", { class: cls(c, value) }, value);
    }))) : el("tr", {}, el("td", { colspan: columns.length }, "nothing here"))),
  );
}

const modeText = (mode) => mode.replaceAll("_", " ").toLowerCase();
// A run id carries its lane and its local departure (`SH-A-B@2026-12-02T07:00`): show the lane by name.
const runText = (load) => `${siteName(load.origin)} → ${siteName(load.destination)}`;

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
    // Availability and promises answer from the read model: say so while it is still on an older snapshot.
    const model = health.read_model?.snapshot_id;
    const behind = id !== null && model !== undefined && model !== null && model !== id ? ` · availability from snapshot ${model} (catching up)` : "";
    $("snapshot").textContent =
      id === null ? "snapshot: none yet" : `snapshot ${id} · ${health.snapshot_age_s.toFixed(1)} s old${health.status === "ok" ? "" : " · STALE"}${behind}`;
    // Availability and promises answer from the read model, which follows the store a
    // refresh behind; tasks and the board from the store. Either moving redraws the view:
    // keyed on the store's id alone, a search made while the read model was one snapshot
    // behind showed the older answer until the next publish.
    const seen = id === null ? null : `${id}/${health.read_model?.snapshot_id ?? ""}`;
    if (seen !== null && seen !== state.snapshot) {
      state.snapshot = seen;
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
      { label: "Site", value: (r) => r.name || siteName(r.site_id) },
      { label: "Kind", value: (r) => r.kind.toLowerCase(), wide: true },
      { label: "km", value: (r) => (r.distance_km === null ? "-" : r.distance_km.toFixed(1)), num: true, wide: true },
      { label: "On hand", value: (r) => r.on_hand, num: true },
      { label: "Reserved", value: (r) => r.reserved, num: true, wide: true },
      { label: "Staged", value: (r) => r.staged, num: true, wide: true },
      // One arrival a line: "4 units, Wed 02 Dec, 23:38 CET".
      { label: "Inbound", wide: true, value: (r) => r.inbound_lines.length
          ? el("ul", { class: "lines" }, r.inbound_lines.map((l) => el("li", {}, `${l.qty} unit${l.qty === 1 ? "" : "s"}, ${when(l.eta, r.site_id)}${l.promised ? " (promised)" : ""}`)))
          : "-" },
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

// The API may bound its answer (`options_total`, `exclusions`, `limit`, `explain`) or answer
// everything (then the page bounds it). Either way the page shows PAGE at first, best first.
async function findOptions() {
  const request = promiseRequest();
  const current = latest("options");
  try {
    const body = await api("/v1/promise", { method: "POST", body: JSON.stringify(request) });
    if (!current()) return;
    state.promise = { request, body, shown: PAGE, together: PAGE, explain: false };
    renderPromise();
  } catch (error) {
    $("confirm-result").textContent = `Could not make a promise: ${error.message}`;
  }
}

// More than the API answered: ask again for up to 100 (an API without `limit` answered all).
async function widenPromise(extra) {
  const promise = state.promise;
  const current = latest("options");
  try {
    const body = await api("/v1/promise", { method: "POST", body: JSON.stringify({ ...promise.request, limit: 100, ...extra }) });
    if (!current()) return;
    promise.body = body;
  } catch (error) {
    $("confirm-result").textContent = `Could not show more: ${error.message}`;
  }
}

function groupExclusions(excluded) {
  const groups = new Map();
  for (const x of excluded) {
    if (!groups.has(x.reason)) groups.set(x.reason, { reason: x.reason, count: 0, examples: [] });
    const group = groups.get(x.reason);
    group.count += 1;
    if (group.examples.length < 3) group.examples.push(x);
  }
  return [...groups.values()].sort((a, b) => b.count - a.count);
}

function moreButton(label, onclick) {
  return el("button", { type: "button", class: "more", onclick }, label);
}

function renderPromise() {
  const { request, body, shown } = state.promise;
  const optionsTotal = body.options_total ?? body.options.length;
  const options = body.options.slice(0, shown);
  table($("options"), [
    { label: "SKU", value: (o) => o.sku, wide: request.items.length < 2 },
    { label: "Option", value: (o) => modeText(o.mode) },
    { label: "From", value: (o) => siteName(o.source_id) },
    { label: "To", value: (o) => (o.deliver_to === "HOME" ? "home" : siteName(o.deliver_to)), wide: true },
    // On a phone the appointment column gives way: the appointment is under the date instead.
    { label: "Available", value: (o) => el("span", {}, when(o.available_at, o.deliver_to === "HOME" ? o.source_id : o.deliver_to),
        o.appointment_at ? el("span", { class: "phone-only" }, el("br"), `appointment ${when(o.appointment_at, o.deliver_to)}`) : "") },
    { label: "Appointment", value: (o) => when(o.appointment_at, o.deliver_to), wide: true },
    { label: "km", value: (o) => o.distance_km.toFixed(1), num: true, wide: true },
    { label: "Price", value: (o) => (o.price === null ? "-" : o.price.toFixed(2)), num: true, wide: true },
    { label: "Shuttle", value: (o) => (o.run_id ? `departs ${when(o.departs_at, o.source_id)}` : "-"), wide: true },
    { label: "", value: (o) => el("button", {
        type: "button", "data-action": "reserve", disabled: !canAct(),
        "aria-label": `Reserve ${o.sku}: ${modeText(o.mode)} from ${siteName(o.source_id)}`,
        onclick: () => confirmOption(request, o),
      }, "Reserve") },
  ], options);
  const more = $("options-more");
  more.replaceChildren();
  if (optionsTotal > 0) more.append(`Showing ${options.length} of ${optionsTotal} option${optionsTotal === 1 ? "" : "s"}, best first. `);
  if (options.length < optionsTotal) {
    more.append(moreButton("Show more options", async () => {
      if (state.promise.shown >= state.promise.body.options.length) await widenPromise({});
      state.promise.shown += PAGE;
      renderPromise();
    }));
  }

  const togetherTotal = body.together_total ?? body.together.length;
  const together = body.together.slice(0, state.promise.together);
  table($("together"), [
    { label: "All together at", value: (t) => siteName(t.store_id) },
    { label: "From", value: (t) => when(t.ready_at, t.store_id) },
    { label: "Appointment", value: (t) => when(t.appointment_at, t.store_id) },
    { label: "How", value: (t) => t.legs.map((l) => `${l.sku}: ${modeText(l.mode)} from ${siteName(l.source_id)}`).join("; "), wide: true },
  ], together);
  const moreTogether = $("together-more");
  moreTogether.replaceChildren();
  if (together.length < togetherTotal) {
    moreTogether.append(moreButton("Show more stores", async () => {
      if (state.promise.together >= state.promise.body.together.length) await widenPromise({});
      state.promise.together += PAGE;
      renderPromise();
    }));
  }

  // Exclusions by reason, with a few examples each; the whole list only on demand.
  const groups = body.exclusions ?? groupExclusions(body.excluded);
  const count = groups.reduce((sum, g) => sum + g.count, 0);
  $("excluded").querySelector("summary").textContent = count ? `Why ${count} other source${count === 1 ? " was" : "s were"} excluded` : "No source was excluded";
  $("excluded").querySelector("ul").replaceChildren(...groups.map((g) => el("li", {},
    `${g.count} × ${g.reason.replaceAll("_", " ").toLowerCase()}, e.g. `,
    g.examples.map((x) => `${siteName(x.site_id)} · ${x.sku}: ${x.detail}`).join("; "),
  )));
  const all = $("excluded-all");
  all.replaceChildren();
  if (state.promise.explain || !body.exclusions) {
    if (state.promise.explain || count <= PAGE) {
      all.append(...body.excluded.slice(0, 200).map((x) => el("li", {}, `${siteName(x.site_id)} · ${x.sku}: ${x.detail}`)));
    } else {
      all.append(el("li", {}, moreButton(`List all ${count}`, () => { state.promise.explain = true; renderPromise(); })));
    }
  } else if (count) {
    all.append(el("li", {}, moreButton(`List all ${count}`, async () => {
      await widenPromise({ explain: true });
      state.promise.explain = true;
      renderPromise();
    })));
  }
}

async function confirmOption(request, option) {
  $("confirm-result").textContent = `Reserving ${option.sku} from ${siteName(option.source_id)}…`;
  // The options were promised on an older snapshot: none is offered again until they are refreshed.
  for (const button of document.querySelectorAll("#options button[data-action]")) button.disabled = true;
  try {
    const body = await api("/v1/confirm", {
      method: "POST",
      body: JSON.stringify({ ...request, option_id: option.option_id, customer: $("customer-name").value.trim() || null }),
    });
    if (body.status === "ACCEPTED") {
      const at = body.option.appointment_at ? `, appointment ${when(body.option.appointment_at, option.deliver_to)}` : "";
      $("confirm-result").textContent = `Reserved: ${body.reservation_id} (${option.sku} ${modeText(option.mode)} from ${siteName(option.source_id)}${at})`;
    } else {
      const next = body.next_best ? ` Next best: ${modeText(body.next_best.mode)} from ${siteName(body.next_best.source_id)}, ${when(body.next_best.available_at, body.next_best.deliver_to)}.` : "";
      $("confirm-result").textContent = `Not reserved (${body.reason}).${next}`;
    }
  } catch (error) {
    const pending = /has not decided reservation (\S+) within/.exec(error.message);
    if (pending) await awaitDecision(pending[1], option);
    else $("confirm-result").textContent = `Not reserved: ${error.message}`;
  }
  // What is left to promise now, and the stock it came from.
  await findOptionsQuietly();
  if ($("sku").value) searchAvailability();
}

// The API stopped waiting (HTTP 504) but the request is in the ledger's input: ask until it is decided.
async function awaitDecision(reservationId, option) {
  const result = $("confirm-result");
  for (let attempt = 0; attempt < 30; attempt += 1) {
    result.textContent = `Sent: ${reservationId}, waiting for the ledger's decision…`;
    await new Promise((resolve) => setTimeout(resolve, 2000));
    try {
      const body = await api(`/v1/reservations/${encodeURIComponent(reservationId)}`);
      if (body.status === "ACCEPTED") {
        result.textContent = `Reserved: ${reservationId} (${option.sku} ${modeText(option.mode)} from ${siteName(option.source_id)})`;
        return;
      }
      if (body.status && body.status !== "PENDING") {
        result.textContent = `Not reserved (${body.status}${body.reason ? `: ${body.reason}` : ""}).`;
        return;
      }
    } catch (error) {
      // 404 until a snapshot holds the decision: ask again.
    }
  }
  result.textContent = `Not decided yet: ${reservationId}; look it up later under Store tasks or with GET /v1/reservations/${reservationId}.`;
}

async function findOptionsQuietly() {
  const keep = $("confirm-result").textContent;
  await findOptions();
  $("confirm-result").textContent = keep;
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
      { label: "Task", value: (t) => modeText(t.kind) },
      { label: "SKU", value: (t) => t.sku },
      { label: "Qty", value: (t) => t.qty, num: true, wide: true },
      { label: "Zone", value: (t) => t.zone || "-", wide: true },
      { label: "Parcel", value: (t) => t.parcel_id || "-", wide: true },
      { label: "For", value: (t) => (t.deliver_to ? siteName(t.deliver_to) : "-"), wide: true },
      { label: "Due", value: (t) => when(t.due_at, t.site_id) },
      { label: "Customer", value: (t) => t.customer || "-", wide: true },
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
        { label: "Parcel", value: (x) => x.parcel_id, wide: true },
        { label: "From", value: (x) => siteName(x.origin), wide: true },
        { label: "To", value: (x) => siteName(x.destination) },
        { label: "SKU", value: (x) => x.sku },
        { label: "Qty", value: (x) => x.qty, num: true, wide: true },
        { label: "Customer", value: (x) => x.customer || "-", wide: true },
        { label: "Arrives", value: (x) => when(x.arrives_at, x.destination) },
        { label: "Status", value: (x) => x.status, status: true },
        { label: "", value: (x) =>
            x.status === "PLANNED"
              ? el("button", { type: "button", "data-action": "loaded", disabled: !canAct(), "aria-label": `Mark parcel ${x.parcel_id} loaded`, onclick: () => act(`/v1/loads/${encodeURIComponent(x.parcel_id)}/loaded`, "board-result", `Loaded: ${x.parcel_id}`) }, "Mark loaded")
              : x.status === "LOADED"
                ? el("button", { type: "button", "data-action": "arrived", disabled: !canAct(), "aria-label": `Mark parcel ${x.parcel_id} arrived`, onclick: () => act(`/v1/loads/${encodeURIComponent(x.parcel_id)}/arrived`, "board-result", `Arrived: ${x.parcel_id}`) }, "Mark arrived")
                : "" },
      ], loads);
      const first = loads[0];
      return el("section", { class: "run", "aria-label": `Run ${run}` },
        el("h3", {}, `${runText(first)} · departs ${when(first.departs_at, first.origin)}`),
        el("p", { class: "run-id" }, `run ${run}`),
        el("div", { class: "scroll" }, node));
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
