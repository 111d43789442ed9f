// Clay explorer page: a Leaflet map of chips coloured by change score, similar / labelled /
// probe searches, and a chip's timeline. Everything comes from this server's /api/*; labels
// stay in the page (the server is read-only) and travel as pos= / neg= parameters.
"use strict";

const state = {
  tiles: [], windows: [], window: null, shown: new Set(), chip: null, acquired: null,
  pos: new Set(), neg: new Set(), results: [], mode: null, maxScore: 10, chipsById: new Map(),
};
const $ = (id) => document.getElementById(id);
const map = L.map("map", { attributionControl: false, zoomSnap: 0.25 });
const chipLayer = L.featureGroup().addTo(map);
const eventLayer = L.layerGroup().addTo(map);
const resultLayer = L.layerGroup().addTo(map);
let selectedOutline = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function status(msg, isError = false) {
  $("status").textContent = msg || "";
  $("status").className = isError ? "error" : "";
}

async function api(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const resp = await fetch(`/api/${path}?${q}`);
  const body = await resp.json().catch(() => ({ error: `HTTP ${resp.status}` }));
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

const thumbUrl = (chip, acquired) => `/api/thumb?${new URLSearchParams({ chip, date: acquired })}`;
const obsKey = (chip, acquired) => `${chip}@${acquired}`;
const boundsOf = (b) => [[b[1], b[0]], [b[3], b[2]]];

// change score -> colour: green (no change) .. dark red (>= the week's 95th percentile)
const RAMP = [[26, 152, 80], [254, 224, 139], [244, 109, 67], [165, 0, 38]];
function colour(score) {
  if (score === null || score === undefined) return "#9aa3ad";
  const t = Math.max(0, Math.min(1, score / state.maxScore)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(t)), f = t - i;
  const c = RAMP[i].map((v, j) => Math.round(v + f * (RAMP[i + 1][j] - v)));
  return `rgb(${c.join(",")})`;
}

function tipFor(c) {
  const box = el("div", { class: "tip" },
    el("img", { src: thumbUrl(c.chip_id, c.acquired), alt: `thumbnail ${c.chip_id}` }),
    el("div", {}, `${c.chip_id} ${c.acquired}`),
    el("div", {}, `change score ${c.change_score === null ? "–" : c.change_score.toFixed(2)}${c.change_flag ? " (flagged)" : ""}`));
  if (c.event) box.append(el("div", { class: "flagged" }, `event: first ${c.event.first_date}, confirmed ${c.event.confirmed_date}`));
  return box;
}

async function loadChips(fit = false) {
  chipLayer.clearLayers();
  eventLayer.clearLayers();
  if (!state.window || state.shown.size === 0) return;
  const body = await api("chips", { tiles: [...state.shown].join(","), window: state.window });
  const scores = body.chips.map((c) => c.change_score).filter((s) => s !== null).sort((a, b) => a - b);
  state.maxScore = Math.max(3, scores.length ? scores[Math.floor(0.95 * (scores.length - 1))] : 3);
  $("legend-max").textContent = `0 – ${state.maxScore.toFixed(1)}`;
  state.chipsById = new Map(body.chips.map((c) => [c.chip_id, c]));
  for (const c of body.chips) {
    const r = L.rectangle(boundsOf(c.bounds), {
      color: "#24303f", weight: 0.5, fillColor: colour(c.change_score), fillOpacity: 0.85,
      className: `chip chip-${c.chip_id}`,
    });
    r.bindTooltip(() => tipFor(c), { sticky: true, direction: "top" });
    r.on("click", () => selectChip(c.chip_id, c.acquired));
    r.addTo(chipLayer);
    if (c.event) {
      const b = c.bounds;
      L.circleMarker([(b[1] + b[3]) / 2, (b[0] + b[2]) / 2], {
        radius: c.event.in_window ? 8 : 5, color: "#7b1fa2", weight: 3, fillColor: "#fff", fillOpacity: 1,
        interactive: false, className: `event-marker event-${c.chip_id}`,
      }).addTo(eventLayer);
    }
  }
  document.body.dataset.chips = String(body.chips.length);
  if (fit && body.chips.length) map.fitBounds(chipLayer.getBounds(), { padding: [10, 10] });
  status(`${body.chips.length} chips, week of ${state.window}`);
}

function searchFilters() {
  return {
    k: $("k").value, min_similarity: $("min-sim").value, tiles: $("filter-tiles").value.trim(),
    from: $("from").value, to: $("to").value,
  };
}

function showSelected(chip, acquired) {
  $("selected").replaceChildren(
    el("img", { src: thumbUrl(chip, acquired), alt: "", width: 64, height: 64 }), " ",
    el("strong", {}, chip), ` on ${acquired}`);
}

async function selectChip(chip, acquired) {
  state.chip = chip;
  state.acquired = acquired;
  if (acquired) showSelected(chip, acquired); else $("selected").textContent = chip;
  if (selectedOutline) selectedOutline.remove();
  const layer = chipLayer.getLayers().find((l) => l.options.className.split(" ").includes(`chip-${chip}`));
  if (layer) selectedOutline = L.rectangle(layer.getBounds(), { color: "#000", weight: 3, fill: false, interactive: false }).addTo(map);
  updateUrl();
  updateButtons();
  await Promise.all([runSearch("similar"), loadTimeline(chip)]);
}

async function runSearch(mode) {
  const f = searchFilters();
  const labels = { pos: [...state.pos].join(","), neg: [...state.neg].join(",") };
  const args = mode === "similar" ? { chip: state.chip, date: state.acquired, ...f }
    : mode === "labeled" ? { ...labels, ...f } : { ...labels, k: f.k, tiles: f.tiles, from: f.from, to: f.to };
  document.body.dataset.results = "loading";
  try {
    const body = await api(mode, args);
    state.results = body.results;
    state.mode = mode;
    if (mode === "similar" && body.query.acquired !== state.acquired) {
      state.acquired = body.query.acquired;
      showSelected(state.chip, state.acquired);
      updateUrl();
    }
    renderResults(body);
    status(`${body.results.length} results (${mode})`);
  } catch (e) {
    status(e.message, true);
  } finally {
    document.body.dataset.results = state.mode === mode ? mode : "error";
  }
}

function renderResults(body) {
  const score = state.mode === "probe" ? "probability" : "similarity";
  const titles = { similar: `Similar to ${body.query.chip_id} on ${body.query.acquired}`,
    labeled: `Labelled search (${state.pos.size} +, ${state.neg.size} −)`,
    probe: `Probe: logistic regression on ${state.pos.size} + / ${state.neg.size} −` };
  $("results-title").textContent = titles[state.mode];
  resultLayer.clearLayers();
  const items = body.results.map((r) => {
    const key = obsKey(r.chip_id, r.acquired);
    const li = el("li", { class: "result", dataset: { chip: r.chip_id, acquired: r.acquired, rank: r.rank } },
      el("img", { src: thumbUrl(r.chip_id, r.acquired), alt: `thumbnail ${key}`, loading: "lazy",
        title: "show on the map", onclick: () => showOnMap(r) }),
      el("div", { class: "meta" }, el("span", { class: "rank" }, `#${r.rank} `), r.chip_id),
      el("div", { class: `meta${r.change_flag ? " flagged" : ""}` }, `${r.acquired} · ${r[score].toFixed(3)}`),
      el("div", { class: "label-buttons" },
        el("button", { class: "mark-pos", title: "mark positive", onclick: () => mark(key, "pos") }, "+"),
        el("button", { class: "mark-neg", title: "mark negative", onclick: () => mark(key, "neg") }, "−")));
    paintLabel(li, key);
    return li;
  });
  const best = new Map();  // one outline per chip (results are observations), with its best rank
  for (const r of body.results) if (r.bounds && !best.has(r.chip_id)) best.set(r.chip_id, r);
  for (const r of best.values()) {
    L.rectangle(boundsOf(r.bounds), { color: "#1565c0", weight: 2, dashArray: "4 3", fill: false, interactive: false,
      className: `result-outline result-${r.chip_id}` })
      .bindTooltip(`#${r.rank}`, { permanent: true, direction: "center", className: "rank" }).addTo(resultLayer);
  }
  $("results").replaceChildren(...items);
}

async function showOnMap(r) {
  if (!state.shown.has(r.tile)) {  // a result in a hidden tile: show that tile's chips too
    state.shown.add(r.tile);
    for (const box of document.querySelectorAll("#tiles input")) box.checked = state.shown.has(box.value);
    updateUrl();
    await loadChips().catch((e) => status(e.message, true));
  }
  if (r.bounds) map.setView(L.latLngBounds(boundsOf(r.bounds)).getCenter(), map.getZoom());
}

function paintLabel(li, key) {
  li.classList.toggle("pos", state.pos.has(key));
  li.classList.toggle("neg", state.neg.has(key));
}

function mark(key, which) {
  const other = which === "pos" ? state.neg : state.pos;
  const set = state[which];
  other.delete(key);
  if (set.has(key)) set.delete(key); else set.add(key);
  for (const li of document.querySelectorAll("#results .result")) paintLabel(li, obsKey(li.dataset.chip, li.dataset.acquired));
  updateButtons();
}

function updateButtons() {
  $("n-pos").textContent = state.pos.size;
  $("n-neg").textContent = state.neg.size;
  $("run-similar").disabled = !state.chip;
  $("run-labeled").disabled = state.pos.size === 0;
  $("run-probe").disabled = state.pos.size === 0 || state.neg.size === 0;
  $("clear-labels").disabled = state.pos.size + state.neg.size === 0;
}

// -- timeline -------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

async function loadTimeline(chip) {
  document.body.dataset.timeline = "loading";
  try {
    const body = await api("timeline", { chip });
    drawTimeline(body);
    document.body.dataset.timeline = chip;
  } catch (e) {
    status(e.message, true);
    document.body.dataset.timeline = "error";
  }
}

function drawTimeline(body) {
  const usePc1 = body.pc1_available;
  const key = usePc1 ? "pc1" : "change_score";
  const pts = body.series.filter((s) => s[key] !== null);
  const W = 640, H = 230, L0 = 46, R0 = 12, T0 = 22, B0 = 28;
  const t = (d) => new Date(`${d}T00:00:00Z`).getTime();
  const xs = body.series.map((s) => t(s.acquired)).concat(body.events.map((e) => t(e.first_date)));
  const ys = pts.map((s) => s[key]).concat(body.series.map((s) => s.baseline).filter((v) => v !== null && v !== undefined));
  const x0 = Math.min(...xs), x1 = Math.max(...xs) + 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pad = (y1 - y0) * 0.08 || 1;
  const X = (v) => L0 + (W - L0 - R0) * (v - x0) / (x1 - x0 || 1);
  const Y = (v) => H - B0 - (H - T0 - B0) * (v - (y0 - pad)) / ((y1 + pad) - (y0 - pad));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${key} of ${body.chip_id} over time` });
  root.append(svg("text", { x: L0, y: 14, class: "tick" },
    `${body.chip_id}: ${usePc1 ? "PC1" : "change score"} per date (red: flagged), detector baseline dashed, events purple`));
  root.append(svg("line", { x1: L0, y1: H - B0, x2: W - R0, y2: H - B0, class: "axis" }));
  root.append(svg("line", { x1: L0, y1: T0, x2: L0, y2: H - B0, class: "axis" }));
  for (const v of [y0, (y0 + y1) / 2, y1]) root.append(svg("text", { x: 2, y: Y(v) + 3, class: "tick" }, v.toFixed(2)));
  const step = Math.max(1, Math.ceil(body.series.length / 6));
  body.series.forEach((s, i) => {
    const x = Math.max(L0 + 28, Math.min(W - R0 - 28, X(t(s.acquired))));
    if (i % step === 0) root.append(svg("text", { x, y: H - 10, class: "tick", "text-anchor": "middle" }, s.acquired));
  });
  root.append(svg("polyline", { class: "series", points: pts.map((s) => `${X(t(s.acquired))},${Y(s[key])}`).join(" ") }));
  // one dashed line per baseline segment (the detector fits a new baseline after each event)
  let seg = [], segId = null;
  const flush = () => { if (seg.length) root.append(svg("polyline", { class: "baseline", points: seg.join(" ") })); seg = []; };
  for (const s of body.series) {
    if (s.baseline === null || s.baseline === undefined || s.baseline_segment !== segId) flush();
    segId = s.baseline_segment;
    if (s.baseline !== null && s.baseline !== undefined) seg.push(`${X(t(s.acquired))},${Y(s.baseline)}`);
  }
  flush();
  for (const s of pts) {
    root.append(svg("circle", { cx: X(t(s.acquired)), cy: Y(s[key]), r: 3.5, class: `obs${s.change_flag ? " flag" : ""}`,
      "data-acquired": s.acquired }));
  }
  for (const e of body.events) {
    const g = svg("g", { class: "event", "data-first": e.first_date, "data-confirmed": e.confirmed_date });
    g.append(svg("line", { x1: X(t(e.first_date)), y1: T0, x2: X(t(e.first_date)), y2: H - B0 }));
    const ex = X(t(e.first_date)), right = ex > W / 2;
    g.append(svg("text", { x: right ? ex - 4 : ex + 4, y: (T0 + H - B0) / 2, "text-anchor": right ? "end" : "start" },
      `event ${e.first_date} (confirmed ${e.confirmed_date})`));
    root.append(g);
  }
  $("timeline").replaceChildren(root);
  const rows = body.events.map((e) => el("div", { class: "event-row", dataset: { first: e.first_date } },
    el("h3", {}, `event ${e.first_date}`, el("br"), `magnitude ${e.magnitude === null ? "–" : e.magnitude.toFixed(1)}`),
    ...e.thumbnails.map((d) => el("div", { class: `thumb${d === e.first_date ? " first" : ""}` },
      el("img", { src: thumbUrl(body.chip_id, d), alt: `${body.chip_id} ${d}` }), d))));
  $("event-thumbs").replaceChildren(...(rows.length ? rows : [el("p", {}, "No confirmed change event for this chip.")]));
}

// -- page state -----------------------------------------------------------------------------

function updateUrl() {
  const q = new URLSearchParams({ tiles: [...state.shown].join(","), window: state.window || "" });
  if (state.chip) q.set("chip", state.chip);
  if (state.chip && state.acquired) q.set("date", state.acquired);
  history.replaceState(null, "", `?${q}`);
}

async function init() {
  const url = new URLSearchParams(location.search);
  try {
    const ov = await api("overview");
    state.tiles = ov.tiles;
    state.windows = ov.windows;
    const wanted = (url.get("tiles") || "").split(",").filter((t) => ov.tiles.includes(t));
    // one tile by default: tiles lie up to continents apart, and their chips would be specks
    state.shown = new Set(wanted.length ? wanted : ov.tiles.slice(0, 1));
    state.window = ov.windows.includes(url.get("window")) ? url.get("window") : ov.windows[ov.windows.length - 1] || null;
    for (const tile of ov.tiles) {
      const box = el("input", { type: "checkbox", value: tile, onchange: (ev) => {
        if (ev.target.checked) state.shown.add(tile); else state.shown.delete(tile);
        updateUrl(); loadChips(true).catch((e) => status(e.message, true));
      } });
      box.checked = state.shown.has(tile);
      $("tiles").append(el("label", {}, box, tile));
    }
    $("window").replaceChildren(...ov.windows.map((w) => el("option", { value: w }, w)));
    $("window").value = state.window || "";
    $("run-labeled").title = ov.labeled_search ? "" : "this database has no clay.search_labeled";
    await loadChips(true);
    if (!ov.windows.length) status("no observations in clay.chips yet: run clay-assets demo or clay-assets run", true);
    const chip = url.get("chip");
    if (chip) await selectChip(chip, url.get("date") || (state.chipsById.get(chip) || {}).acquired || null);
  } catch (e) {
    status(e.message, true);
  }
  document.body.dataset.ready = "1";
}

$("window").addEventListener("change", (ev) => {
  state.window = ev.target.value; updateUrl(); loadChips().catch((e) => status(e.message, true));
});
$("min-sim").addEventListener("input", (ev) => { $("min-sim-value").textContent = Number(ev.target.value).toFixed(2); });
$("min-sim").addEventListener("change", () => { if (state.mode) runSearch(state.mode); });
$("run-similar").addEventListener("click", () => runSearch("similar"));
$("run-labeled").addEventListener("click", () => runSearch("labeled"));
$("run-probe").addEventListener("click", () => runSearch("probe"));
$("clear-labels").addEventListener("click", () => {
  state.pos.clear(); state.neg.clear();
  for (const li of document.querySelectorAll("#results .result")) paintLabel(li, "");
  updateButtons();
});
map.setView([0, 0], 2);
init();
