// cartwin clinician dashboard: plain JavaScript, no libraries, no build step.
// Every value from the API is written with textContent or setAttribute (no
// HTML parsing of data). The bearer token lives in sessionStorage and is sent only in the
// Authorization header; alert streams use one-use tickets (see dashboard.py).
"use strict";

const TOKEN_KEY = "cartwin.token";
const SVG_NS = "http://www.w3.org/2000/svg";
const DAY_MS = 86400000;
const SERIES = ["anc", "temperature", "systolic_bp", "heart_rate", "spo2", "cart_flow"];
const PHASES = ["leukapheresis", "manufacturing", "bridging", "lymphodepletion",
  "infusion", "acute phase", "follow-up"];
const state = { patient: null, source: null, lastAlertId: null, retries: 0, infusion: null };

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(path, options) {
  const opts = Object.assign({ method: "GET" }, options || {});
  opts.headers = Object.assign({ Authorization: "Bearer " + token() }, opts.headers || {});
  const response = await fetch(path, opts);
  let data = null;
  try { data = await response.json(); } catch (err) { data = null; }
  return { ok: response.ok, status: response.status, data: data };
}

function errorText(result) {
  const message = result.data && result.data.error ? result.data.error.message : "";
  if (result.status === 401) return "401: the token is unknown or revoked. " + message;
  if (result.status === 403) return "403: access denied, this token may not see this patient. " + message;
  return result.status + ": " + message;
}

// Period of the patient list's refresh, milliseconds.
const PATIENT_LIST_REFRESH_MS = 10000;

// -- patients ----------------------------------------------------------------
// quiet: a periodic refresh of phases and alert counts of every patient; it
// keeps the list and the status line as they are when the request fails
async function loadPatients(quiet = false) {
  const list = $("patients");
  if (!token()) { list.replaceChildren(); if (!quiet) setStatus("Enter a token to see patients."); return; }
  const result = await api("/v1/dashboard/patients");
  if (!result.ok) {
    if (!quiet) { list.replaceChildren(); setStatus(errorText(result), true); }
    return;
  }
  list.replaceChildren();
  if (!quiet) setStatus(result.data.length + " patient(s) visible to this token.");
  for (const row of result.data) {
    const button = el("button");
    button.type = "button";
    button.dataset.pseudonym = row.pseudonym;
    const badge = el("span", row.alerts, row.alerts > 0 ? "badge alert" : "badge");
    badge.title = "CRS alerts";
    button.append(badge, el("span", row.pseudonym, "pseudonym"),
      el("span", row.phase + (row.crs_current_grade === null ? "" : " · CRS " + row.crs_current_grade), "phase"));
    button.addEventListener("click", () => openPatient(row.pseudonym));
    const item = el("li");
    item.append(button);
    list.append(item);
  }
}

function badgeOf(pseudonym) {
  for (const button of document.querySelectorAll("#patients button")) {
    if (button.dataset.pseudonym === pseudonym) return button.querySelector(".badge");
  }
  return null;
}

// -- one patient -------------------------------------------------------------
async function openPatient(pseudonym) {
  closeStream();
  state.patient = pseudonym;
  state.lastAlertId = null;
  for (const button of document.querySelectorAll("#patients button")) {
    button.classList.toggle("selected", button.dataset.pseudonym === pseudonym);
  }
  const base = "/v1/patients/" + encodeURIComponent(pseudonym);
  const query = SERIES.map((q) => "quantity=" + q).join("&");
  const [versions, scores, crs, obs, alerts] = await Promise.all([
    api(base + "/twin-versions"), api(base + "/scores"), api(base + "/crs"),
    api(base + "/observations?" + query), api(base + "/alerts?limit=1000"),
  ]);
  const failed = [versions, scores, crs, obs, alerts].find((r) => !r.ok);
  if (failed) {
    $("patient").hidden = true;
    setStatus("Patient " + pseudonym + ": " + errorText(failed), true);
    return;
  }
  let full = null;
  if (versions.data.length) {
    const latest = versions.data[versions.data.length - 1];
    const result = await api(base + "/twin-versions/" + encodeURIComponent(latest.version_id));
    if (result.ok) full = result.data;
  }
  $("patient").hidden = false;
  $("patient-id").textContent = pseudonym;
  state.infusion = obs.data.infusion ? Date.parse(obs.data.infusion) : null;
  renderJourney(full ? full.outputs.journey || [] : []);
  renderKinetics(full ? full.outputs.kinetics : null, obs.data.series.cart_flow);
  renderCrs(crs.data, alerts.data);
  renderVitals(obs.data.series);
  renderAnc(obs.data.series.anc);
  renderScores(scores.data);
  renderVersions(versions.data);
  setStatus("Patient " + pseudonym + " loaded.");
  state.retries = 0;
  openStream(pseudonym);
}

async function refreshCrs() {
  const pseudonym = state.patient;
  const base = "/v1/patients/" + encodeURIComponent(pseudonym);
  const [crs, obs, alerts] = await Promise.all([
    api(base + "/crs"),
    api(base + "/observations?quantity=temperature&quantity=systolic_bp&quantity=heart_rate&quantity=spo2"),
    api(base + "/alerts?limit=1000"),
  ]);
  if (pseudonym !== state.patient) return;
  if (!crs.ok || !obs.ok || !alerts.ok) { setStatus(errorText([crs, obs, alerts].find((r) => !r.ok)), true); return; }
  renderCrs(crs.data, alerts.data);
  renderVitals(obs.data.series);
  const badge = badgeOf(pseudonym);
  if (badge) { badge.textContent = String(alerts.data.length); badge.className = alerts.data.length ? "badge alert" : "badge"; }
}

// -- live alerts (Server-Sent Events with a one-use ticket) --------------------
async function openStream(pseudonym) {
  const result = await api("/v1/patients/" + encodeURIComponent(pseudonym) + "/alerts/stream-ticket", { method: "POST" });
  if (pseudonym !== state.patient) return;
  if (!result.ok) { $("stream-state").textContent = "(no live updates: " + result.status + ")"; return; }
  let url = result.data.stream + "?ticket=" + encodeURIComponent(result.data.ticket);
  if (state.lastAlertId !== null) url += "&last_event_id=" + encodeURIComponent(state.lastAlertId);
  const source = new EventSource(url);
  state.source = source;
  source.addEventListener("open", () => { $("stream-state").textContent = "(live)"; state.retries = 0; });
  source.addEventListener("crs-alert", (event) => {
    state.lastAlertId = Number(event.lastEventId);
    setStatus("New CRS alert for " + pseudonym + ".");
    refreshCrs();
    loadPatients(true);
  });
  source.addEventListener("error", () => {
    // A ticket is good once: reconnect with a new one, bounded back-off.
    source.close();
    if (state.source !== source) return;
    state.source = null;
    $("stream-state").textContent = "(reconnecting)";
    state.retries += 1;
    if (state.retries <= 10) setTimeout(() => { if (state.patient === pseudonym) openStream(pseudonym); }, 1000 * state.retries);
    else $("stream-state").textContent = "(live updates stopped)";
  });
}

function closeStream() {
  if (state.source) { state.source.close(); state.source = null; }
  $("stream-state").textContent = "";
}

// -- charts (inline SVG) -----------------------------------------------------
function svgEl(tag, attrs, cls) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (cls) node.setAttribute("class", cls);
  return node;
}

function svgText(x, y, text, anchor) {
  const node = svgEl("text", { x: x, y: y, "text-anchor": anchor || "start" });
  node.textContent = text;
  return node;
}

function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (lo === Infinity) return [0, 1];
  return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
}

// A chart frame: returns the svg and x/y scale functions. opts.log: log10 y.
function frame(container, xs, ys, opts) {
  const W = 440, H = 180, L = 46, R = 8, T = 8, B = 24;
  const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
  svg.append(svgEl("title"));
  svg.firstChild.textContent = opts.title;
  const [x0, x1] = extent(xs);
  let [y0, y1] = opts.yrange || extent(ys.filter((v) => !opts.log || v > 0));
  if (opts.log) { y0 = Math.floor(Math.log10(y0)); y1 = Math.ceil(Math.log10(y1)); if (y0 === y1) y1 += 1; }
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => { const v = opts.log ? Math.log10(Math.max(y, 10 ** y0)) : y; return H - B - (v - y0) / (y1 - y0) * (H - T - B); };
  svg.append(svgEl("line", { x1: L, y1: H - B, x2: W - R, y2: H - B }, "axis"), svgEl("line", { x1: L, y1: T, x2: L, y2: H - B }, "axis"));
  const ticks = opts.log ? range(y0, y1).map((e) => 10 ** e) : [y0, (y0 + y1) / 2, y1];
  for (const t of ticks) {
    svg.append(svgEl("line", { x1: L, y1: sy(t), x2: W - R, y2: sy(t) }, "grid"));
    svg.append(svgText(L - 3, sy(t) + 3, opts.log ? formatLog(t) : round(t), "end"));
  }
  for (const t of [x0, (x0 + x1) / 2, x1]) svg.append(svgText(sx(t), H - 8, "day " + round(t), "middle"));
  svg.append(svgText(L + 4, T + 10, opts.ylabel));
  container.replaceChildren(svg);
  return { svg: svg, sx: sx, sy: sy };
}

function range(a, b) { const out = []; for (let i = a; i <= b; i += 1) out.push(i); return out; }
function round(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Number(v.toPrecision(3)).toString(); }
function formatLog(v) { return v >= 1 ? String(v) : v.toPrecision(1); }
function path(points, sx, sy) { return points.map((p, i) => (i ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1)).join(" "); }

function day(iso) { return state.infusion === null ? Date.parse(iso) / DAY_MS : (Date.parse(iso) - state.infusion) / DAY_MS; }

function emptyChart(container, text) { container.replaceChildren(el("p", text, "note")); }

function renderJourney(phases) {
  const panel = $("panel-journey");
  const chart = panel.querySelector(".chart");
  const list = panel.querySelector(".phases");
  list.replaceChildren();
  const spans = phases.map((p) => ({ phase: p.phase, start: Date.parse(p.start), end: Date.parse(p.end), derived: false }));
  const leuka = spans.find((s) => s.phase === "leukapheresis");
  const infusion = spans.find((s) => s.phase === "infusion");
  if (leuka && infusion) spans.push({ phase: "manufacturing", start: leuka.end, end: infusion.start, derived: true });
  spans.sort((a, b) => PHASES.indexOf(a.phase) - PHASES.indexOf(b.phase));
  if (!spans.length) { emptyChart(chart, "No journey yet (needs a twin version)."); return; }
  const W = 440, rowH = 18, L = 110, H = spans.length * rowH + 22;
  const t0 = Math.min(...spans.map((s) => s.start)), t1 = Math.max(...spans.map((s) => s.end));
  const sx = (t) => L + (t - t0) / Math.max(t1 - t0, 1) * (W - L - 8);
  const svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
  spans.forEach((s, i) => {
    const y = 4 + i * rowH;
    svg.append(svgText(L - 4, y + 11, s.phase, "end"));
    svg.append(svgEl("rect", { x: sx(s.start), y: y + 2, width: Math.max(sx(s.end) - sx(s.start), 3), height: rowH - 6 }, s.derived ? "phase-bar derived" : "phase-bar"));
    const item = el("li", s.phase + ": " + new Date(s.start).toISOString().slice(0, 10) + " to " + new Date(s.end).toISOString().slice(0, 10) + (s.derived ? " (derived: leukapheresis to infusion)" : ""));
    list.append(item);
  });
  svg.append(svgText(L, H - 4, new Date(t0).toISOString().slice(0, 10)), svgText(W - 8, H - 4, new Date(t1).toISOString().slice(0, 10), "end"));
  chart.replaceChildren(svg);
}

function renderKinetics(kinetics, observed) {
  const panel = $("panel-kinetics");
  const chart = panel.querySelector(".chart");
  const note = panel.querySelector(".note");
  const obs = (observed || []).map((o) => [day(o.time), o.value, o.censored]).filter((p) => p[0] >= 0);
  if (!kinetics || !kinetics.t_days || !kinetics.t_days.length) {
    note.textContent = kinetics ? "No forecast: " + (kinetics.reason || kinetics.status) : "No twin version yet: no forecast.";
    if (!obs.length) { emptyChart(chart, "No CAR T measurements."); return; }
  } else {
    note.textContent = "Median and " + Math.round(100 * kinetics.interval) + "% interval, " + kinetics.quantity + " (" + kinetics.unit + "), fit " + kinetics.status + "; dots: measured, rings: below the limit of quantification.";
  }
  const t = kinetics && kinetics.t_days ? kinetics.t_days : [];
  const lo = kinetics && kinetics.lower ? kinetics.lower : [], hi = kinetics && kinetics.upper ? kinetics.upper : [];
  const med = kinetics && kinetics.median ? kinetics.median : [];
  const f = frame(chart, t.concat(obs.map((p) => p[0])), hi.concat(lo, obs.map((p) => p[1])), { log: true, ylabel: "CAR T (log scale)", title: "CAR T kinetics" });
  if (t.length) {
    const band = t.map((x, i) => [x, hi[i]]).concat(t.map((x, i) => [x, lo[i]]).reverse()).filter((p) => p[1] > 0);
    f.svg.append(svgEl("path", { d: path(band, f.sx, f.sy) + " Z" }, "band"));
    f.svg.append(svgEl("path", { d: path(t.map((x, i) => [x, med[i]]).filter((p) => p[1] > 0), f.sx, f.sy) }, "median"));
  }
  for (const p of obs) f.svg.append(svgEl("circle", { cx: f.sx(p[0]), cy: f.sy(p[1]), r: 3 }, p[2] ? "censored" : "obs"));
}

function renderCrs(crs, alerts) {
  $("crs-current").textContent = crs.current_grade === null ? "n/a" : String(crs.current_grade);
  const maxGrade = crs.timeline.max_grade;
  $("crs-max").textContent = maxGrade === null || maxGrade === undefined ? "n/a" : String(maxGrade);
  const chart = $("panel-crs").querySelector(".chart");
  const points = (crs.timeline.points || []).map((p) => [day(p.time), p.grade]);
  if (!points.length) emptyChart(chart, crs.timeline.message || "No CRS evaluation.");
  else {
    const f = frame(chart, points.map((p) => p[0]), [0, 4], { yrange: [0, 4], ylabel: "CRS grade", title: "CRS grade timeline" });
    const steps = [];
    points.forEach((p, i) => { if (i) steps.push([p[0], points[i - 1][1]]); steps.push(p); });
    f.svg.append(svgEl("path", { d: path(steps, f.sx, f.sy) }, "step"));
  }
  const list = $("alerts");
  list.replaceChildren();
  for (const a of alerts.slice(-8).reverse()) {
    list.append(el("li", "#" + a.alert_id + " grade " + a.grade_from + " → " + a.grade_to + " (" + a.driver + ") at " + a.time + ": " + a.reasons.join("; ")));
  }
}

function renderVitals(series) {
  const chart = $("panel-vitals").querySelector(".chart");
  const temp = (series.temperature || []).map((o) => [day(o.time), o.value]);
  const sbp = (series.systolic_bp || []).map((o) => [day(o.time), o.value]);
  if (!temp.length && !sbp.length) { emptyChart(chart, "No vital signs."); return; }
  chart.replaceChildren();
  const a = el("div"), b = el("div");
  chart.append(a, b);
  if (temp.length) {
    const f = frame(a, temp.map((p) => p[0]), temp.map((p) => p[1]).concat([36, 38.5]), { ylabel: "temperature (Cel); dashed: 38 fever", title: "Temperature" });
    f.svg.append(svgEl("line", { x1: f.sx(temp[0][0]), x2: f.sx(temp[temp.length - 1][0]), y1: f.sy(38), y2: f.sy(38) }, "threshold"));
    f.svg.append(svgEl("path", { d: path(temp, f.sx, f.sy) }, "line1"));
  }
  if (sbp.length) {
    const f = frame(b, sbp.map((p) => p[0]), sbp.map((p) => p[1]).concat([80, 140]), { ylabel: "systolic BP (mm[Hg]); dashed: 90", title: "Systolic blood pressure" });
    f.svg.append(svgEl("line", { x1: f.sx(sbp[0][0]), x2: f.sx(sbp[sbp.length - 1][0]), y1: f.sy(90), y2: f.sy(90) }, "threshold"));
    f.svg.append(svgEl("path", { d: path(sbp, f.sx, f.sy) }, "line2"));
  }
}

function renderAnc(anc) {
  const chart = $("panel-anc").querySelector(".chart");
  const points = (anc || []).map((o) => [day(o.time), o.value]);
  if (!points.length) { emptyChart(chart, "No neutrophil counts."); return; }
  const f = frame(chart, points.map((p) => p[0]), points.map((p) => p[1]).concat([0.5]), { log: true, ylabel: "ANC (" + anc[0].unit + "); dashed: 0.5", title: "Absolute neutrophil count" });
  f.svg.append(svgEl("line", { x1: f.sx(points[0][0]), x2: f.sx(points[points.length - 1][0]), y1: f.sy(0.5), y2: f.sy(0.5) }, "threshold"));
  f.svg.append(svgEl("path", { d: path(points.filter((p) => p[1] > 0), f.sx, f.sy) }, "line2"));
  for (const p of points) if (p[1] > 0) f.svg.append(svgEl("circle", { cx: f.sx(p[0]), cy: f.sy(p[1]), r: 2 }, "obs"));
}

function renderScores(data) {
  const body = $("scores");
  body.replaceChildren();
  for (const s of data.scores) {
    const row = el("tr");
    const value = typeof s.value === "number" ? round(s.value) : (s.value === null ? "n/a" : s.value);
    row.append(el("td", s.name), el("td", value), el("td", s.category || ""), el("td", s.timepoint || ""));
    row.title = s.reference || "";
    body.append(row);
  }
  $("scores-source").textContent = data.source === "twin_version" ? "From twin version " + data.twin_version + "." : "Computed from the stored data (no twin version yet).";
}

function renderVersions(versions) {
  const body = $("versions");
  body.replaceChildren();
  const byId = new Map(versions.map((v) => [v.version_id, v]));
  for (const v of versions.slice().reverse()) {
    const parent = v.parent_id ? byId.get(v.parent_id) : null;
    let changed = "first version";
    if (v.parent_id && !parent) changed = "parent not listed";
    else if (parent) {
      const parts = [];
      if (parent.data_hash !== v.data_hash) parts.push("data");
      if (JSON.stringify(parent.settings) !== JSON.stringify(v.settings)) parts.push("settings");
      if (parent.model_version !== v.model_version || parent.model_name !== v.model_name) parts.push("model");
      if (parent.package_version !== v.package_version) parts.push("package");
      changed = parts.length ? parts.join(", ") + " changed" : "nothing changed (rerun)";
    }
    const row = el("tr");
    row.append(el("td", v.version_id.slice(0, 12), "mono"), el("td", v.created_at.slice(0, 19)),
      el("td", v.data_hash.slice(0, 12), "mono"), el("td", v.parent_id ? v.parent_id.slice(0, 12) : "none", "mono"),
      el("td", v.model_name + " " + v.model_version), el("td", changed));
    body.append(row);
  }
}

// -- wiring --------------------------------------------------------------------
function start() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    closeStream();
    state.patient = null;
    $("patient").hidden = true;
    loadPatients();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    closeStream();
    state.patient = null;
    $("patient").hidden = true;
    loadPatients();
  });
  $("open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("open-pseudonym").value.trim().toLowerCase();
    if (!/^[0-9a-f]{16}$/.test(value)) { setStatus("A pseudonym is 16 hex digits.", true); return; }
    openPatient(value);
  });
  loadPatients();
  // alerts and phases of the patients not open update on this period
  setInterval(() => loadPatients(true), PATIENT_LIST_REFRESH_MS);
}

start();
