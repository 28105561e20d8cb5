// socksgate capture inspector page: file in, worker parses, table + detail pane out.
// No framework, no network: everything stays in this tab.

import { parseFilter, FilterError } from "./filter.js";
import { COLUMNS, hostPort, cellText, visibleRows } from "./columns.js";
import { selectPackets } from "./pcap.js";
import { Sessions } from "./table.js";

const $ = (id) => document.getElementById(id);


const state = {
  file: null,
  report: null, // { capture } of the capture shown
  table: null, // its sessions (Sessions: in columns, rows built for the rows drawn)
  sortKey: "n",
  sortAsc: true,
  filter: "",
  window: null, // [from, to] in capture seconds (epoch), brushed on the timeline, or null
  view: new Int32Array(0), // the sessions shown (indices into the table), filtered and sorted
  selected: null,
  focusN: null, // the session row in the tab order
  message: null,
};

let worker = null;
let pending = new Map(); // request key -> resolve

function ask(type, extra = {}) {
  const key = type + ":" + (extra.index ?? "");
  return new Promise((resolve) => {
    pending.set(key, resolve);
    worker.postMessage({ type, ...extra });
  });
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function size(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} kB`;
}

function setProgress(done, total) {
  $("progress").hidden = false;
  const pct = total ? Math.min(100, (100 * done) / total) : 0;
  $("progress-fill").style.width = pct.toFixed(1) + "%";
  $("progress-text").textContent = `${pct.toFixed(0)} % of ${size(total)}`;
}

function run(file) {
  state.file = file;
  $("error").hidden = true;
  $("results").hidden = true;
  $("detail").hidden = true;
  $("export-json").disabled = true;
  $("export-csv").disabled = true;
  $("export-pcap").disabled = true;
  $("timing").textContent = "";
  delete document.body.dataset.mbps;
  delete document.body.dataset.wasmMemory;
  setProgress(0, file.size);
  if (worker) worker.terminate();
  pending = new Map();
  worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.onmessage = (e) => {
    const m = e.data;
    if (m.type === "progress") setProgress(m.done, m.total);
    else if (m.type === "session" || m.type === "full") {
      const key = m.type + ":" + (m.index ?? "");
      const resolve = pending.get(key);
      pending.delete(key);
      if (resolve) resolve(JSON.parse(m.json));
    }
    else if (m.type === "error") {
      $("progress").hidden = true;
      showError(`${file.name}: ${m.message}`);
    } else if (m.type === "done") {
      $("progress").hidden = true;
      $("version").textContent = m.version;
      const mbps = m.bytes / 1e6 / (m.ms / 1000);
      $("timing").textContent = `${size(m.bytes)} parsed in ${(m.ms / 1000).toFixed(3)} s (${mbps.toFixed(1)} MB/s)`;
      document.body.dataset.wasmMemory = String(m.wasmMemory);
      document.body.dataset.mbps = mbps.toFixed(1);
      if (m.table.count >= OFF_THREAD_ROWS) deferViewWorker(m.table);
      load({ capture: JSON.parse(m.capture) }, new Sessions(m.table));
    }
  };
  worker.onerror = (e) => {
    $("progress").hidden = true;
    showError(`The inspector failed to start: ${e.message || e}`);
  };
  worker.postMessage({ type: "inspect", file, reveal: $("reveal").checked });
}

// Deep links: the view (filter, sort, open session) is kept in the URL's fragment, e.g.
// `#filter=version%3Asocks5&sort=bytes_down&order=desc&session=3`. The fragment never leaves
// the browser; a link opened before a capture is loaded applies to the first capture opened.
let linkPending = location.hash.length > 1;

function writeLink() {
  if (linkPending) return;
  const p = new URLSearchParams();
  if (state.filter.trim()) p.set("filter", state.filter.trim());
  if (state.window) p.set("window", state.window.map((t) => t.toFixed(6)).join("-"));
  if (state.sortKey !== "n" || !state.sortAsc) {
    p.set("sort", state.sortKey);
    p.set("order", state.sortAsc ? "asc" : "desc");
  }
  if (state.selected != null) p.set("session", String(state.selected));
  const hash = p.toString();
  if (hash !== location.hash.slice(1)) history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
}

/** Applies a deep link's view to the capture just loaded; returns the session to open. */
function readLink() {
  if (!linkPending) return null;
  linkPending = false;
  const p = new URLSearchParams(location.hash.slice(1));
  $("filter").value = p.get("filter") ?? "";
  compileFilter($("filter").value);
  const w = (p.get("window") ?? "").split("-").map(Number);
  state.window = w.length === 2 && w.every(Number.isFinite) && w[0] <= w[1] ? w : null;
  if (COLUMNS.some((c) => c.key === p.get("sort"))) {
    state.sortKey = p.get("sort");
    state.sortAsc = p.get("order") !== "desc";
  }
  const n = Number(p.get("session"));
  return Number.isInteger(n) && n > 0 ? n : null;
}

function load(report, table) {
  state.report = report;
  state.table = table;
  state.view = new Int32Array(0);
  viewSeq++; // an answer still on its way is about the previous capture's sessions
  state.selected = null;
  state.window = null;
  let t0 = Infinity, t1 = -Infinity;
  for (let k = 0; k < table.count; k++) { t0 = Math.min(t0, table.start(k)); t1 = Math.max(t1, table.end(k)); }
  state.span = table.count ? [t0, Math.max(t1, t0 + 1e-6)] : [0, 1];
  const c = report.capture;
  $("summary").textContent =
    `${state.file.name}: ${c.format}, ${c.packets} packets, ${c.link_types.join(", ") || "no link types"}, ` +
    `${c.tcp_connections} TCP connections, ${table.count} SOCKS sessions` +
    (c.truncated ? " — file truncated" : "");
  $("results").hidden = false;
  $("drop").classList.add("small");
  $("export-json").disabled = false;
  $("export-csv").disabled = false;
  $("export-pcap").disabled = false;
  const linked = readLink();
  showWindow();
  renderTable().then(() => { if (linked != null) openSession(linked); });
}

// ---- the view worker: filtering and sorting every row off the main thread ----
// Below this many sessions a pass takes a few milliseconds: it runs on the main thread, and
// the view changes in the same task as the click or key that asked for it.
const OFF_THREAD_ROWS = 10_000;
let viewWorker = null;
let viewSeq = 0;
let viewWaiters = []; // resolved when the newest request's answer is shown

let viewTable = null; // the columns for a view worker not started yet

/**
 * Starts the view worker for `table` once the first view is painted (building its rows would
 * take the CPU from the page's own on a small machine), or as soon as a view needs it.
 */
function deferViewWorker(table) {
  if (viewWorker) { viewWorker.terminate(); viewWorker = null; }
  viewTable = table;
  requestAnimationFrame(() => setTimeout(ensureViewWorker));
}

function ensureViewWorker() {
  if (viewTable) startViewWorker(viewTable);
  viewTable = null;
}

/** A fresh view worker holding the rows of `table` (the sessions' columns, copied to it). */
function startViewWorker(table) {
  if (viewWorker) viewWorker.terminate();
  for (const w of viewWaiters) w();
  viewWaiters = [];
  viewWorker = new Worker(new URL("./view-worker.js", import.meta.url), { type: "module" });
  viewWorker.onmessage = (e) => {
    const m = e.data;
    if (m.seq !== viewSeq) return; // a newer request is on its way: its answer will do
    if (m.error === undefined) {
      state.view = m.order;
      showView();
    }
    const waiters = viewWaiters;
    viewWaiters = [];
    for (const w of waiters) w();
  };
  viewWorker.postMessage({ type: "rows", table });
}

/** Asks for the rows to show (the view worker for big captures); resolves once they are shown. */
function requestView() {
  if (!state.filter.trim() && !state.window && state.sortKey === "n" && state.sortAsc) {
    // Every row in capture order: what the rows already are, so no pass is needed (this is
    // the view a capture opens with). A view worker's answer still on its way is stale now.
    viewSeq++;
    state.view = new Int32Array(state.table.count);
    for (let k = 0; k < state.view.length; k++) state.view[k] = k;
    showView();
    const waiters = viewWaiters;
    viewWaiters = [];
    for (const w of waiters) w();
    return Promise.resolve();
  }
  if (state.table.count < OFF_THREAD_ROWS) {
    const predicate = state.filter.trim() ? parseFilter(state.filter, cellText, COLUMNS) : null;
    const shown = visibleRows(state.table.rows(), { predicate, window: state.window, sortKey: state.sortKey, sortAsc: state.sortAsc });
    state.view = Int32Array.from(shown, (r) => r.n - 1);
    showView();
    return Promise.resolve();
  }
  ensureViewWorker();
  return new Promise((resolve) => {
    viewWaiters.push(resolve);
    viewWorker.postMessage({ type: "view", seq: ++viewSeq, filter: state.filter, window: state.window,
      sortKey: state.sortKey, sortAsc: state.sortAsc });
  });
}

/**
 * Compiles the filter text; a malformed expression shows its error beside the box and keeps
 * the last good filter applied. Returns whether it compiled.
 */
function compileFilter(text) {
  try {
    // Parsed here too (it is quick) to show a malformed filter at once; the view worker applies it.
    if (text.trim()) parseFilter(text, cellText, COLUMNS);
    state.filter = text;
    $("filter-error").textContent = "";
    $("filter").removeAttribute("aria-invalid");
    return true;
  } catch (e) {
    if (!(e instanceof FilterError)) throw e;
    $("filter-error").textContent = e.message;
    $("filter").setAttribute("aria-invalid", "true");
    return false;
  }
}

// Filtering and sorting 200 000 rows takes hundreds of milliseconds: it runs in the view
// worker, once typing pauses (a debounce), so keystrokes are never queued behind it.
const FILTER_DELAY_MS = 150;
let filterTimer = 0;
function filterTyped(text) {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => {
    filterTimer = 0;
    // Tests wait for data-filtered: set once the filtered rows are shown.
    if (compileFilter(text)) renderTable().then(() => { document.body.dataset.filtered = text; });
    else document.body.dataset.filtered = text;
  }, FILTER_DELAY_MS);
}

// ---- the time window (brushed on the timeline or typed in seconds from the capture's start) ----
/** Applies window `w` ([from, to] or null); `typed`: it came from the boxes, leave them be. */
function setWindow(w, typed = false) {
  state.window = w && w[1] > w[0] ? w : null;
  if (typed) $("window-clear").disabled = !state.window;
  else showWindow();
  renderTable();
}

function showWindow() {
  const [t0] = state.span ?? [0];
  $("window-from").value = state.window ? (state.window[0] - t0).toFixed(3) : "";
  $("window-to").value = state.window ? (state.window[1] - t0).toFixed(3) : "";
  $("window-clear").disabled = !state.window;
}

function windowTyped() {
  const [t0, t1] = state.span;
  const from = $("window-from").value.trim(), to = $("window-to").value.trim();
  if (!from && !to) { setWindow(null, true); return; }
  const a = from ? Number(from) : 0, b = to ? Number(to) : t1 - t0;
  if (!Number.isFinite(a) || !Number.isFinite(b) || a >= b) {
    $("filter-error").textContent = "time window: from must be a number of seconds below to";
    return;
  }
  $("filter-error").textContent = "";
  setWindow([t0 + a, t0 + b], true);
}

function renderTable() {
  const head = document.querySelector("#sessions thead tr");
  head.replaceChildren(...COLUMNS.map((c) => {
    const th = document.createElement("th");
    th.textContent = c.label;
    th.dataset.key = c.key;
    th.tabIndex = 0;
    if (state.sortKey === c.key) th.className = state.sortAsc ? "asc" : "desc";
    th.setAttribute("aria-sort", state.sortKey === c.key ? (state.sortAsc ? "ascending" : "descending") : "none");
    return th;
  }));
  // The selection and the link change now; the rows when the view worker answers.
  if (state.table.count >= OFF_THREAD_ROWS) {
    writeLink();
    renderBody();
  }
  return requestView();
}

/** Shows `state.view`: the timeline, the count and the table's rows. */
function showView() {
  writeLink();
  drawTimeline();
  $("count").textContent = `${state.view.length} of ${state.table.count} sessions`;
  document.querySelector("#sessions").setAttribute("aria-rowcount", String(state.view.length + 1));
  renderBody();
}

// The table is virtualised: only the rows in (and around) the scrolled view are in the DOM,
// with spacer rows standing for the others, so a capture with 100 000 sessions scrolls as
// lightly as one with ten.
const OVERSCAN = 20;
let rowHeight = 0;
let bodyFrame = 0;

function rowWindow() {
  const wrap = document.querySelector(".table-wrap");
  const h = rowHeight || 26;
  const count = Math.ceil((wrap.clientHeight || 600) / h) + 2 * OVERSCAN;
  const first = Math.max(0, Math.min(Math.floor(wrap.scrollTop / h) - OVERSCAN, state.view.length - count));
  return [first, Math.min(state.view.length, first + count)];
}

function spacer(height) {
  const tr = document.createElement("tr");
  tr.className = "spacer";
  tr.setAttribute("aria-hidden", "true");
  tr.style.height = `${height}px`;
  return tr;
}

function renderBody() {
  const view = state.view;
  const body = document.querySelector("#sessions tbody");
  const frag = document.createDocumentFragment();
  const [first, end] = rowWindow();
  // One row in the tab order (roving tabindex); arrow keys move between rows.
  const has = (n) => n != null && view.includes(n - 1);
  const focusN = has(state.focusN) ? state.focusN : has(state.selected) ? state.selected
    : view.length ? view[0] + 1 : undefined;
  const hadFocus = document.activeElement?.closest?.("#sessions tbody") != null;
  const h = rowHeight || 26;
  if (first > 0) frag.append(spacer(first * h));
  for (let i = first; i < end; i++) {
    const r = state.table.row(view[i]);
    const tr = document.createElement("tr");
    tr.dataset.n = r.n;
    tr.tabIndex = r.n === focusN ? 0 : -1;
    tr.setAttribute("aria-rowindex", String(i + 2));
    tr.setAttribute("aria-selected", String(state.selected === r.n));
    if (state.selected === r.n) tr.className = "selected";
    if (r.anomalies) tr.classList.add("warn");
    for (const c of COLUMNS) {
      const td = document.createElement("td");
      td.textContent = cellText(r, c.key);
      if (c.num) td.className = "num";
      tr.append(td);
    }
    frag.append(tr);
  }
  if (end < view.length) frag.append(spacer((view.length - end) * h));
  body.replaceChildren(frag);
  const sample = body.querySelector("tr[data-n]");
  if (sample && !rowHeight) {
    rowHeight = sample.getBoundingClientRect().height || 26;
    if (view.length > end - first) return renderBody(); // spacers at the measured height
  }
  if (hadFocus) focusRow(focusN);
}

/** Scrolls session `n` into the table's view (rendering it) and focuses it. */
function revealRow(n) {
  const i = state.view.indexOf(n - 1);
  if (i < 0) return;
  const wrap = document.querySelector(".table-wrap");
  const h = rowHeight || 26;
  const head = document.querySelector("#sessions thead").getBoundingClientRect().height;
  const top = i * h, bottom = top + h;
  if (top < wrap.scrollTop) wrap.scrollTop = top;
  else if (bottom > wrap.scrollTop + wrap.clientHeight - head) wrap.scrollTop = bottom - wrap.clientHeight + head;
  state.focusN = n;
  renderBody();
  focusRow(n);
}

// Timeline: one bar per session shown (filtered), from its first to its last packet, on the
// capture's time axis, packed into lanes; the open session is drawn in the accent colour.
// Clicking a bar opens its session. A canvas, so 100 000 sessions draw in one pass; the table
// is the accessible equivalent (the canvas's label says what it shows). The canvas is also a
// slider over the sessions shown in time order: ←/→/Home/End move a cursor (outlined bar,
// announced through aria-valuetext), Enter opens that session, [ and ] put the time window's
// start at its start and the end at its end, Escape clears the window.
const LANES = 6;
// The bars in time order, four numbers each: x0, x1, lane, session n (flat: one bar per
// session shown, 200,000 of them for a big capture).
let timelineHits = new Float64Array(0);
let timelineCount = 0; // bars in timelineHits
let timelineCursor = -1; // index of the bar under the keyboard cursor, -1 = none
let timelineCursorN = null; // the session under the cursor: it stays on it when bars move

/** Bar `i` as [x0, x1, lane, n]. */
function hit(i) {
  return Array.from(timelineHits.subarray(4 * i, 4 * i + 4));
}

/** The index of the bar of session `n`, or -1. */
function hitOf(n) {
  for (let i = 0; i < timelineCount; i++) if (timelineHits[4 * i + 3] === n) return i;
  return -1;
}

// Where each session's bar is, as [x0, x1, lane, n] in time order (for tests and tools).
Object.defineProperty($("timeline"), "bars", {
  get: () => Array.from({ length: timelineCount }, (_, i) => hit(i)),
});

function drawTimeline() {
  const canvas = $("timeline");
  const table = state.table;
  const view = state.view;
  const width = canvas.clientWidth || 800;
  const scale = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(64 * scale);
  const g = canvas.getContext("2d");
  g.setTransform(scale, 0, 0, scale, 0, 0);
  g.clearRect(0, 0, width, 64);
  timelineCount = 0;
  if (!view.length) {
    canvas.setAttribute("aria-label", "timeline: no sessions shown");
    for (const [k, v] of [["aria-valuemax", "0"], ["aria-valuenow", "0"], ["aria-valuetext", "no sessions"]]) canvas.setAttribute(k, v);
    timelineCursor = -1;
    return;
  }
  // The axis is the whole capture's, so a brushed window stays where it was drawn.
  const [t0, t1] = state.span;
  const span = Math.max(t1 - t0, 1e-6);
  const style = getComputedStyle(document.documentElement);
  const colour = { bar: style.getPropertyValue("--muted").trim() || "#667085",
    warn: "#d08a00", sel: style.getPropertyValue("--accent").trim() || "#2657c5" };
  const laneEnd = new Array(LANES).fill(-Infinity);
  const laneH = (64 - 8) / LANES;
  // Sessions come in capture order, usually already by start: sort only when not.
  let sorted = true;
  for (let i = 1; i < view.length && sorted; i++) sorted = table.start(view[i - 1]) <= table.start(view[i]);
  const byStart = sorted ? view : Array.from(view).sort((a, b) => table.start(a) - table.start(b));
  if (timelineHits.length < 4 * view.length) timelineHits = new Float64Array(4 * view.length);
  let selected = null;
  // Bars of one lane and colour that touch are drawn as one rectangle (200,000 sessions on a
  // few hundred pixels overlap almost entirely), in the same order, so the picture is the same.
  const pending = new Array(LANES).fill(null); // per lane: [x0, x1, warn]
  const flush = (lane) => {
    const p = pending[lane];
    if (!p) return;
    g.fillStyle = p[2] ? colour.warn : colour.bar;
    g.fillRect(p[0], 4 + lane * laneH, p[1] - p[0], laneH - 2);
    pending[lane] = null;
  };
  for (const k of byStart) {
    const x0 = 4 + ((table.start(k) - t0) / span) * (width - 8);
    const x1 = Math.max(x0 + 2, 4 + ((table.end(k) - t0) / span) * (width - 8));
    // The first lane free at x0, else the one that frees first.
    let lane = -1;
    for (let l = 0; l < LANES && lane < 0; l++) if (laneEnd[l] < x0) lane = l;
    if (lane < 0) { lane = 0; for (let l = 1; l < LANES; l++) if (laneEnd[l] < laneEnd[lane]) lane = l; }
    laneEnd[lane] = x1 + 1;
    const at = 4 * timelineCount++;
    timelineHits[at] = x0; timelineHits[at + 1] = x1; timelineHits[at + 2] = lane; timelineHits[at + 3] = k + 1;
    if (k + 1 === state.selected) { selected = [x0, x1, lane]; continue; }
    const warn = table.anomalyCount(k) > 0;
    const p = pending[lane];
    if (p && p[2] === warn && x0 <= p[1]) p[1] = Math.max(p[1], x1);
    else { flush(lane); pending[lane] = [x0, x1, warn]; }
  }
  for (let lane = 0; lane < LANES; lane++) flush(lane);
  if (selected) {
    g.fillStyle = colour.sel;
    g.fillRect(selected[0], 4 + selected[2] * laneH, selected[1] - selected[0], laneH - 2);
  }
  if (state.window || brush) {
    const [a, b] = brush ? [Math.min(...brush), Math.max(...brush)]
      : state.window.map((t) => 4 + ((t - t0) / span) * (width - 8));
    g.fillStyle = colour.sel;
    g.globalAlpha = 0.18;
    g.fillRect(a, 0, Math.max(b - a, 1), 64);
    g.globalAlpha = 1;
    g.strokeStyle = colour.sel;
    g.strokeRect(a + 0.5, 0.5, Math.max(b - a, 1) - 1, 63);
  }
  timelineCursor = timelineCursorN === null ? -1 : hitOf(timelineCursorN);
  if (timelineCursor >= 0) {
    const [x0, x1, lane] = hit(timelineCursor);
    g.strokeStyle = colour.sel;
    g.lineWidth = 2;
    g.strokeRect(x0 - 2, 3 + lane * laneH, x1 - x0 + 4, laneH);
    g.lineWidth = 1;
  }
  describeCursor();
  const iso = (t) => new Date(t * 1000).toISOString().replace("T", " ").replace("Z", "");
  canvas.setAttribute("aria-label",
    `timeline of ${view.length} sessions from ${iso(t0)} to ${iso(t1)} (${span.toFixed(3)} s); the table lists them`);
}

/** The slider's value and text: the session under the keyboard cursor. */
function describeCursor() {
  const canvas = $("timeline");
  canvas.setAttribute("aria-valuemin", "0"); // 0: no session chosen yet
  canvas.setAttribute("aria-valuemax", String(timelineCount));
  canvas.setAttribute("aria-valuenow", String(timelineCursor + 1));
  const n = cursorSession();
  const r = n === null ? null : state.table.row(n - 1);
  canvas.setAttribute("aria-valuetext", r
    ? `session #${r.n}, ${r.client} to ${r.dst ?? "?"}, ${(r.session.start - state.span[0]).toFixed(3)} s to ${(r.session.end - state.span[0]).toFixed(3)} s`
    : "no session chosen: press → or Home");
  canvas.dataset.cursor = n === null ? "" : String(n);
}

/** The session n of the bar under the keyboard cursor, or null. */
function cursorSession() {
  return timelineCursor >= 0 && timelineCursor < timelineCount ? timelineHits[4 * timelineCursor + 3] : null;
}

$("timeline").addEventListener("keydown", (e) => {
  if (!state.report || !timelineCount) return;
  const last = timelineCount - 1;
  const moves = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 };
  let handled = true;
  if (e.key in moves) timelineCursor = Math.max(0, Math.min(last, (timelineCursor < 0 && moves[e.key] < 0 ? last + 1 : timelineCursor) + moves[e.key]));
  else if (e.key === "Home") timelineCursor = 0;
  else if (e.key === "End") timelineCursor = last;
  else if (e.key === "Enter" || e.key === " ") {
    if (timelineCursor >= 0) { const n = cursorSession(); state.focusN = n; openSession(n); }
  } else if (e.key === "[" || e.key === "]") {
    const n = cursorSession();
    if (n !== null) {
      const start = state.table.start(n - 1), end = state.table.end(n - 1);
      const [from, to] = state.window ?? state.span;
      const w = e.key === "[" ? [start, Math.max(to, start + 1e-6)] : [Math.min(from, end - 1e-6), end];
      // Keep the cursor on the same session once the window redraws the bars.
      setWindow(w);
      timelineCursor = hitOf(n);
    }
  } else if (e.key === "Escape" && state.window) setWindow(null);
  else handled = false;
  if (handled) {
    e.preventDefault();
    timelineCursorN = cursorSession();
    drawTimeline();
  }
});

/** Capture time (epoch seconds) at canvas x. */
function timeAt(x) {
  const [t0, t1] = state.span;
  const width = $("timeline").clientWidth || 800;
  return t0 + Math.min(1, Math.max(0, (x - 4) / (width - 8))) * (t1 - t0);
}

// Dragging across the timeline brushes a time window; a click (no drag) opens the bar's session.
let brush = null; // [x at press, x now] while dragging
$("timeline").addEventListener("pointerdown", (e) => {
  if (!state.report || e.button !== 0) return;
  const x = e.clientX - e.currentTarget.getBoundingClientRect().left;
  brush = [x, x];
  e.currentTarget.setPointerCapture(e.pointerId);
});
$("timeline").addEventListener("pointermove", (e) => {
  if (!brush) return;
  brush[1] = e.clientX - e.currentTarget.getBoundingClientRect().left;
  drawTimeline();
});
$("timeline").addEventListener("pointerup", (e) => {
  if (!brush) return;
  const rect = e.currentTarget.getBoundingClientRect();
  const x = e.clientX - rect.left, y = e.clientY - rect.top;
  const [x0] = brush;
  brush = null;
  if (Math.abs(x - x0) >= 4) {
    setWindow([timeAt(Math.min(x0, x)), timeAt(Math.max(x0, x))]);
    return;
  }
  drawTimeline();
  const lane = Math.floor((y - 4) / ((64 - 8) / LANES));
  let best = null;
  for (let at = 0; at < 4 * timelineCount; at += 4) {
    if (timelineHits[at + 2] !== lane) continue;
    const b0 = timelineHits[at], b1 = timelineHits[at + 1], n = timelineHits[at + 3];
    const d = x < b0 ? b0 - x : x > b1 ? x - b1 : 0;
    if (d <= 3 && (!best || d < best[0])) best = [d, n];
  }
  if (best) { state.focusN = best[1]; openSession(best[1]); }
});
window.addEventListener("resize", () => { if (state.report) drawTimeline(); });

function focusRow(n) {
  const tr = document.querySelector(`#sessions tbody tr[data-n="${n}"]`);
  if (tr) { state.focusN = n; tr.focus(); }
}

function sortBy(key) {
  if (state.sortKey === key) state.sortAsc = !state.sortAsc;
  else { state.sortKey = key; state.sortAsc = true; }
  renderTable();
}

/** Session `n`'s row (1-based, as in the table's # column), or null. */
function rowOf(n) {
  return Number.isInteger(n) && n >= 1 && n <= (state.table?.count ?? 0) ? state.table.row(n - 1) : null;
}

async function openSession(n) {
  const row = rowOf(n);
  if (!row) return;
  state.selected = n;
  renderTable();
  if (!row.full) {
    // The table came without messages; fetch this session's from the worker.
    row.session = await ask("session", { index: n - 1 });
    row.full = true;
    if (state.selected !== n) return;
  }
  const s = row.session;
  $("detail").hidden = false;
  $("detail-title").textContent = `Session #${n}: ${s.version} ${s.client} → ${s.server}`;
  const facts = [
    ["methods offered", s.methods_offered.join(", ")],
    ["method", s.method],
    ["username", s.username],
    ["password", s.password],
    ["auth ok", s.auth_ok],
    ["command", s.command],
    ["destination", hostPort(s.dst_host, s.dst_port)],
    ["reply code", s.reply_code],
    ["bound", s.bound],
    ["bind peer", s.bind_peer],
    ["payload ↑ / ↓", `${s.bytes_up} / ${s.bytes_down} bytes`],
    ["UDP relay", s.udp_relay],
    ["UDP datagrams ↑ / ↓", s.udp_relay ? `${s.udp_datagrams_up} / ${s.udp_datagrams_down}` : null],
    ["UDP destinations", s.udp_destinations.join(", ")],
    ["tunnelled", s.tunnelled],
    ["SNI", s.sni],
    ["first frame", s.first_frame],
    ["start / end", `${s.start} / ${s.end}`],
  ];
  $("facts").replaceChildren(...facts
    .filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = String(v);
      return [dt, dd];
    }));
  $("anomalies").replaceChildren(...s.anomalies.map((a) => {
    const li = document.createElement("li"); li.textContent = "⚠ " + a; return li;
  }));
  $("messages").replaceChildren(...s.messages.map((m, i) => {
    const li = document.createElement("li");
    li.dataset.i = i;
    li.tabIndex = 0;
    const dir = document.createElement("span");
    dir.className = "dir " + m.dir;
    dir.textContent = { up: "C→S", down: "S→C", udp_up: "C→R", udp_down: "R→C" }[m.dir];
    li.append(dir, " " + m.summary);
    return li;
  }));
  selectMessage(s.messages.length ? 0 : null);
  $("detail").scrollIntoView({ block: "nearest" });
}

function selectMessage(i) {
  const s = rowOf(state.selected)?.session;
  state.message = i;
  for (const li of $("messages").children) li.classList.toggle("selected", Number(li.dataset.i) === i);
  const tbody = document.querySelector("#fields tbody");
  if (i === null || !s) {
    tbody.replaceChildren();
    $("hex").replaceChildren();
    $("where").textContent = "";
    return;
  }
  const m = s.messages[i];
  $("message-title").textContent = `Fields of ${m.kind} (${m.len} bytes)`;
  tbody.replaceChildren(...m.fields.map((f, j) => {
    const tr = document.createElement("tr");
    tr.dataset.j = j;
    tr.tabIndex = 0;
    for (const t of [f.name, f.value, f.len ? `${f.offset}–${f.offset + f.len - 1}` : "—"]) {
      const td = document.createElement("td"); td.textContent = t; tr.append(td);
    }
    return tr;
  }));
  const ranges = m.file_ranges.map(([o, l]) => `${o}+${l}`).join(", ");
  $("where").textContent = `stream offset ${m.stream_offset}; frame${m.frames.length > 1 ? "s" : ""} ${m.frames.join(", ")}; file bytes ${ranges}`;
  renderHex(m, null);
}

function renderHex(m, field) {
  const bytes = m.hex.match(/../g) ?? [];
  const pre = $("hex");
  const frag = document.createDocumentFragment();
  for (let row = 0; row < bytes.length; row += 16) {
    const off = document.createElement("span");
    off.className = "off";
    off.textContent = row.toString(16).padStart(4, "0") + "  ";
    frag.append(off);
    let ascii = "";
    for (let k = row; k < Math.min(row + 16, bytes.length); k++) {
      const b = document.createElement("span");
      b.className = "b";
      b.dataset.k = k;
      const masked = bytes[k] === "**";
      b.textContent = masked ? "••" : bytes[k];
      if (masked) b.classList.add("masked");
      if (field && k >= field.offset && k < field.offset + field.len) b.classList.add("hl");
      frag.append(b, k % 16 === 7 ? "  " : " ");
      const v = masked ? 46 : parseInt(bytes[k], 16);
      ascii += v >= 32 && v < 127 ? String.fromCharCode(v) : ".";
    }
    const pad = 16 - Math.min(16, bytes.length - row);
    frag.append(" ".repeat(pad * 3 + (pad > 8 ? 1 : 0)) + " ");
    const asc = document.createElement("span");
    asc.className = "ascii";
    asc.textContent = ascii;
    frag.append(asc, "\n");
  }
  pre.replaceChildren(frag);
}

function selectField(j) {
  const s = rowOf(state.selected)?.session;
  if (!s || state.message === null) return;
  const m = s.messages[state.message];
  for (const tr of document.querySelectorAll("#fields tbody tr")) {
    tr.classList.toggle("selected", Number(tr.dataset.j) === j);
  }
  renderHex(m, m.fields[j]);
}

function download(name, type, text) {
  const url = URL.createObjectURL(text instanceof Blob ? text : new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

const CSV_KEYS = ["client", "server", "version", "methods_offered", "method", "username", "auth_ok",
  "command", "dst_host", "dst_port", "reply_code", "bound", "bind_peer", "bytes_up", "bytes_down",
  "udp_datagrams_up", "udp_datagrams_down", "start", "end", "tunnelled", "sni", "anomalies"];

function toCsv(sessions) {
  const esc = (v) => {
    if (v === null || v === undefined) return "";
    const s = Array.isArray(v) ? v.join(";") : String(v);
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const keys = sessions.some((s) => "password" in s) ? [...CSV_KEYS, "password"] : CSV_KEYS;
  return [keys.join(","), ...sessions.map((s) => keys.map((k) => esc(s[k])).join(","))].join("\r\n") + "\r\n";
}

function baseName() {
  return (state.file?.name ?? "capture").replace(/\.(pcapng|pcap|cap)$/i, "");
}

// ---- wiring ----
$("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) run(f); });
$("reveal").addEventListener("change", () => { if (state.file) run(state.file); });
$("filter").addEventListener("input", (e) => filterTyped(e.target.value));
for (const id of ["window-from", "window-to"]) {
  $(id).addEventListener("change", windowTyped);
  $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") windowTyped(); });
}
$("window-clear").addEventListener("click", () => { $("filter-error").textContent = ""; setWindow(null); });
document.querySelector("#sessions thead").addEventListener("click", (e) => {
  const th = e.target.closest("th"); if (th) sortBy(th.dataset.key);
});
document.querySelector("#sessions thead").addEventListener("keydown", (e) => {
  const th = e.target.closest("th"); if (th && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); sortBy(th.dataset.key); }
});
document.querySelector("#sessions tbody").addEventListener("click", (e) => {
  const tr = e.target.closest("tr"); if (tr) { state.focusN = Number(tr.dataset.n); openSession(state.focusN); }
});
document.querySelector(".table-wrap").addEventListener("scroll", () => {
  if (!bodyFrame) bodyFrame = requestAnimationFrame(() => { bodyFrame = 0; renderBody(); });
});
// Keyboard: ↑/↓/PageUp/PageDown/Home/End move between sessions, Enter or Space opens one.
document.querySelector("#sessions tbody").addEventListener("keydown", (e) => {
  const tr = e.target.closest("tr[data-n]");
  if (!tr) return;
  const i = state.view.indexOf(Number(tr.dataset.n) - 1);
  const page = Math.max(1, Math.floor(document.querySelector(".table-wrap").clientHeight / (rowHeight || 26)) - 1);
  const moves = { ArrowDown: i + 1, ArrowUp: i - 1, PageDown: i + page, PageUp: i - page,
    Home: 0, End: state.view.length - 1 };
  if (e.key in moves) {
    e.preventDefault();
    const next = state.view[Math.max(0, Math.min(state.view.length - 1, moves[e.key]))];
    if (next !== undefined) revealRow(next + 1);
  } else if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    const n = Number(tr.dataset.n);
    state.focusN = n;
    openSession(n).then(() => revealRow(n));
  }
});
// Escape closes the detail (focus back on its row); "/" jumps to the filter.
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && !$("detail").hidden) {
    const n = state.selected;
    $("detail").hidden = true;
    state.selected = null;
    renderTable();
    revealRow(n);
  } else if (e.key === "/" && !["INPUT", "TEXTAREA"].includes(document.activeElement?.tagName)) {
    e.preventDefault();
    $("filter").focus();
  }
});
$("messages").addEventListener("click", (e) => {
  const li = e.target.closest("li"); if (li) selectMessage(Number(li.dataset.i));
});
document.querySelector("#fields tbody").addEventListener("click", (e) => {
  const tr = e.target.closest("tr"); if (tr) selectField(Number(tr.dataset.j));
});
for (const [id, handler] of [["messages", selectMessage], ["fields", selectField]]) {
  $(id).addEventListener("keydown", (e) => {
    const el = e.target.closest("[data-i],[data-j]");
    if (el && e.key === "Enter") handler(Number(el.dataset.i ?? el.dataset.j));
  });
}
$("detail-close").addEventListener("click", () => { $("detail").hidden = true; state.selected = null; renderTable(); });
// Exports carry the sessions shown (filter and time window applied), in capture order.
function shownIndices() {
  return Array.from(state.view).sort((a, b) => a - b);
}
$("export-json").addEventListener("click", async () => {
  const doc = await ask("full");
  doc.sessions = shownIndices().map((i) => doc.sessions[i]);
  download(baseName() + ".socks.json", "application/json", JSON.stringify(doc, null, 2));
});
$("export-csv").addEventListener("click", () =>
  download(baseName() + ".socks.csv", "text/csv", toCsv(shownIndices().map((i) => state.table.session(i)))));
$("export-pcap").addEventListener("click", async () => {
  const button = $("export-pcap");
  button.disabled = true;
  try {
    const blob = await selectPackets(state.file, shownIndices().map((i) => state.table.session(i)));
    download(baseName() + ".filtered.pcap", "application/vnd.tcpdump.pcap", blob);
  } catch (e) {
    showError(`pcap export: ${e.message || e}`);
  } finally {
    button.disabled = false;
  }
});

for (const ev of ["dragenter", "dragover"]) {
  document.addEventListener(ev, (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
}
for (const ev of ["dragleave", "drop"]) {
  document.addEventListener(ev, (e) => { e.preventDefault(); document.body.classList.remove("dragging"); });
}
document.addEventListener("drop", (e) => {
  const f = e.dataTransfer?.files?.[0];
  if (f) run(f);
});

if ("serviceWorker" in navigator && location.protocol !== "file:") {
  navigator.serviceWorker.register("sw.js").catch(() => {});
}
