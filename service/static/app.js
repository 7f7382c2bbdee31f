// morph review page: plain JS, no build step. Talks to the same /v1 API as any client.
// Every value from the server is inserted with textContent (never innerHTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { files: [], colors: {}, review: null };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function authHeaders() {
  const key = $("#api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text) { $("#status").textContent = text; }

// ---- file picking and dropping -------------------------------------------------------------
function setFiles(list) {
  state.files = Array.from(list);
  const ul = $("#file-list");
  ul.replaceChildren(...state.files.map((f) => el("li", `${f.name} (${Math.round(f.size / 1024)} KB)`)));
}

$("#files").addEventListener("change", (ev) => setFiles(ev.target.files));
const drop = $("#drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (ev) => {
  ev.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (ev) => {
  ev.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (ev) => { if (ev.dataTransfer) setFiles(ev.dataTransfer.files); });

// ---- talking to the API --------------------------------------------------------------------
async function errorMessage(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error.message || body.error.code;
  } catch (_) { /* not JSON */ }
  return `the server answered ${resp.status} ${resp.statusText}`;
}

async function loadColors() {
  try {
    const resp = await fetch("/v1/labels", { headers: authHeaders() });
    if (resp.ok) state.colors = (await resp.json()).colors || {};
  } catch (_) { /* colours are optional */ }
}

function colorOf(label) { return state.colors[label] || "#ffd400"; }

$("#case-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  if (!state.files.length) { showError("Choose one or more images first."); return; }
  const ctxText = $("#context").value.trim();
  if (ctxText) {
    try {
      const ctx = JSON.parse(ctxText);
      if (typeof ctx !== "object" || Array.isArray(ctx) || ctx === null) throw new Error("not an object");
    } catch (e) {
      showError("Clinical context: please enter a JSON object, e.g. {\"age_years\": 67}.");
      return;
    }
  }
  const form = new FormData();
  state.files.forEach((f) => form.append("files", f, f.name));
  form.append("stain", $("#stain").value);
  if ($("#um").value) form.append("um_per_px", $("#um").value);
  if (ctxText) form.append("context", ctxText);
  form.append("overlay", "true");
  if ($("#store").checked) form.append("store", "true");

  $("#analyze").disabled = true;
  setStatus("Analysing…");
  try {
    await loadColors();
    const resp = await fetch("/v1/analyze", { method: "POST", body: form, headers: authHeaders() });
    if (!resp.ok) {
      $("#results").hidden = true;
      showError(await errorMessage(resp));
      setStatus("");
      return;
    }
    const report = await resp.json();
    render(report);
    if (report.case_id) {
      startReview(report.case_id, report.images || []);
      await refreshVerified();
      setStatus("Done. Case " + report.case_id + " is stored for review.");
    } else {
      stopReview();
      setStatus("Done.");
    }
  } catch (e) {
    showError("Could not reach the server: " + e.message);
    setStatus("");
  } finally {
    $("#analyze").disabled = false;
  }
});

// ---- rendering -----------------------------------------------------------------------------
function render(report, imageSrcs) {
  renderFields(report.images || [], imageSrcs);
  renderCounts(report.counts || {});
  renderFindings(report.findings || {});
  renderDifferentials(report.differentials || []);
  $("#warnings").replaceChildren(...(report.warnings || []).map((w) => el("li", w)));
  $("#report-disclaimer").textContent = report.disclaimer || "";
  $("#results").hidden = false;
}

function renderFields(images, imageSrcs) {
  const box = $("#fields");
  box.replaceChildren();
  images.forEach((im, index) => {
    const fig = el("figure", null, "field");
    fig.dataset.path = im.path;
    if (im.error) {
      fig.classList.add("failed");
      fig.append(el("figcaption", `${im.path}: could not be analysed: ${im.error.message}`, "field-error"));
      box.append(fig);
      return;
    }
    const stage = el("div", null, "stage");
    const img = document.createElement("img");
    img.alt = `overlay of ${im.path}`;
    img.className = "overlay";
    if (imageSrcs && imageSrcs[index]) img.src = imageSrcs[index];
    else if (im.overlay_png) img.src = "data:image/png;base64," + im.overlay_png;
    stage.append(img, cellLayer(im, index));
    const counted = im.cells.filter((c) => !c.touches_border).length;
    fig.append(stage, el("figcaption",
      `${im.path}: ${im.width}×${im.height}, ${counted} cells counted` +
      (im.median_rbc_diameter_um ? `, median RBC ${im.median_rbc_diameter_um} µm` : "")));
    for (const w of im.warnings || []) fig.append(el("p", w, "warn"));
    box.append(fig);
  });
}

function cellLayer(im, index) {
  // An SVG over the image in image coordinates: one box per cell, hover for label + confidence.
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${im.width} ${im.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.classList.add("cells");
  for (const c of im.cells) {
    const [x0, y0, x1, y1] = c.bbox;
    const r = document.createElementNS(SVG_NS, "rect");
    r.setAttribute("x", x0); r.setAttribute("y", y0);
    r.setAttribute("width", x1 - x0); r.setAttribute("height", y1 - y0);
    r.setAttribute("stroke", c.touches_border ? "#a0a0a0" : colorOf(c.label));
    r.classList.add("cell");
    const conf = `${(100 * (c.confidence || 0)).toFixed(0)}%`;
    const tip = `${c.label} (${conf})` + (c.touches_border ? ", at border: not counted" : "");
    r.dataset.label = c.label;
    r.dataset.modelLabel = c.label;
    r.dataset.image = String(index);
    r.dataset.cell = String(c.id);
    r.dataset.tip = tip;
    if (!c.touches_border) r.classList.add("counted");
    if (c.review) markReviewed(r, c.review);
    r.addEventListener("click", () => { if (state.review) selectCell(r); });
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = tip;
    r.append(title);
    r.addEventListener("mousemove", (ev) => showTip(ev, tip));
    r.addEventListener("mouseleave", hideTip);
    svg.append(r);
  }
  return svg;
}

function showTip(ev, text) {
  const t = $("#tooltip");
  t.textContent = text;
  t.style.left = ev.pageX + 12 + "px";
  t.style.top = ev.pageY + 12 + "px";
  t.hidden = false;
}
function hideTip() { $("#tooltip").hidden = true; }

function renderCounts(counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0) || 1;
  const rows = Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([lab, n]) => {
    const tr = el("tr");
    const sw = el("span", null, "swatch");
    sw.style.background = colorOf(lab);
    const td = el("td");
    td.append(sw, document.createTextNode(lab));
    tr.append(td, el("td", n), el("td", (100 * n / total).toFixed(1)));
    return tr;
  });
  $("#counts tbody").replaceChildren(...rows);
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000);
  if (Array.isArray(v)) return v.map(fmt).join(", ");
  if (typeof v === "object") return summarise(v) || JSON.stringify(v);
  return String(v);
}

// One line for a finding object such as {count, of, percent, grade, status, reason}.
function summarise(o) {
  const parts = [];
  if (typeof o.count === "number" && typeof o.of === "number") parts.push(`${o.count}/${o.of}`);
  if (typeof o.percent === "number") parts.push(`${fmt(o.percent)}%`);
  if (typeof o.per_100_wbc === "number") parts.push(`${fmt(o.per_100_wbc)} per 100 WBC`);
  if (typeof o.cv_percent === "number") parts.push(`CV ${fmt(o.cv_percent)}%`);
  if (o.grade && o.grade !== "none") parts.push(`grade ${o.grade}`);
  if (o.status) parts.push(String(o.status).replace(/_/g, " "));
  if (o.reason) parts.push(`(${o.reason})`);
  else if (o.message && !parts.length) parts.push(o.message);
  if ("value" in o) parts.push(fmt(o.value) + (o.unit ? " " + o.unit : ""));
  return parts.join(" · ");
}

// Bookkeeping keys of the findings that a reviewer does not need in the table.
const FINDINGS_SKIP = new Set(["unidentified_policy", "rules_file", "counted", "scale", "stain",
  "context", "score_note", "warnings", "assessed_rbc"]);

function renderFindings(findings) {
  const rows = [];
  const add = (name, value, cls) => {
    const tr = el("tr", null, cls);
    tr.append(el("td", name.replace(/_/g, " ")), el("td", value));
    rows.push(tr);
  };
  if (findings.evidence && findings.evidence.message) {
    add("cells assessed", findings.evidence.message, findings.evidence.enough === false ? "flag" : "");
  }
  for (const [lab, v] of Object.entries(findings.rbc_morphology || {})) {
    if (v && v.count > 0) add(lab, summarise(v));
  }
  for (const [k, v] of Object.entries(findings)) {
    if (FINDINGS_SKIP.has(k) || k === "evidence" || k === "rbc_morphology") continue;
    if (k === "derived") {
      for (const [dk, dv] of Object.entries(v || {})) if (dv !== null) add(dk, fmt(dv));
      continue;
    }
    if (k === "rbc_max_grade" && v && typeof v === "object") {
      add("highest grade", v.morphology ? `${v.grade} (${v.morphology})` : fmt(v.grade));
      continue;
    }
    add(k, fmt(v));
  }
  $("#findings tbody").replaceChildren(...rows);
  $("#score-note").textContent = findings.score_note || "";
}

function itemText(x) {
  if (typeof x === "string") return x;
  if (x && typeof x === "object") return x.text || x.message || x.name || x.finding || JSON.stringify(x);
  return String(x);
}

function renderDifferentials(diffs) {
  const ol = $("#differentials");
  ol.replaceChildren();
  if (!diffs.length) { ol.append(el("li", "No differential reached the reporting threshold.", "none")); return; }
  for (const d of diffs) {
    const li = el("li", null, "diff");
    const head = el("div", null, "diff-head");
    head.append(el("strong", d.name || d.id), el("span", `score ${fmt(d.score)}`, "score"));
    li.append(head);
    const parts = [["Evidence for", d.evidence_for, true], ["Evidence against", d.evidence_against, true],
      ["Missing", d.missing, false], ["Next tests", d.next_tests, false], ["References", d.references, false]];
    for (const [title, items, open] of parts) {
      if (!items || !items.length) continue;
      const sec = el("details", null, "evidence " + title.toLowerCase().replace(/ /g, "-"));
      sec.open = open;
      sec.append(el("summary", `${title} (${items.length})`));
      const ul = el("ul");
      items.forEach((x) => ul.append(el("li", itemText(x))));
      sec.append(ul);
      li.append(sec);
    }
    ol.append(li);
  }
}

// ---- review of a stored case -------------------------------------------------------------------
// Keys 1-9 and 0 give the common labels; every other label is in the "other label" list.
const KEY_LABELS = ["normal", "macrocyte", "microcyte", "spherocyte", "target_cell", "teardrop",
  "schistocyte", "neutrophil", "lymphocyte", "nucleated_rbc"];
const REVIEW_EXCLUDED = new Set(["unidentified", "unclassified"]);

function caseUrl(path) { return "/v1/cases/" + encodeURIComponent(state.review.caseId) + (path || ""); }

function markReviewed(rect, review) {
  rect.classList.add("reviewed");
  rect.dataset.label = review.label;
  rect.setAttribute("stroke", colorOf(review.label));
  const tip = `${review.label} (reviewed by ${review.reviewer}` +
    (review.label !== rect.dataset.modelLabel ? `; model said ${rect.dataset.modelLabel})` : ", confirmed)");
  rect.dataset.tip = tip;
  const title = rect.querySelector("title");
  if (title) title.textContent = tip;
}

function startReview(caseId, images) {
  state.review = { caseId, selected: null };
  $("#case-id").textContent = caseId;
  $("#review").hidden = false;
  buildLabelKeys();
  selectCell(null);
}

function stopReview() {
  state.review = null;
  $("#review").hidden = true;
  $("#counts-kind").textContent = "";
}

function buildLabelKeys() {
  const keys = KEY_LABELS.map((lab, i) => {
    const b = el("button", null);
    b.type = "button";
    b.dataset.label = lab;
    const kbd = el("kbd", String((i + 1) % 10));
    b.append(kbd, document.createTextNode(lab.replace(/_/g, " ")));
    b.addEventListener("click", () => relabelSelected(lab));
    return b;
  });
  $("#label-keys").replaceChildren(...keys);
  const sel = $("#label-select");
  const others = Object.keys(state.colors).filter((lab) => !REVIEW_EXCLUDED.has(lab) && !KEY_LABELS.includes(lab));
  sel.replaceChildren(el("option", "other label…"), ...others.map((lab) => {
    const o = el("option", lab.replace(/_/g, " "));
    o.value = lab;
    return o;
  }));
  sel.firstChild.value = "";
}

function reviewCells() { return Array.from(document.querySelectorAll("#fields rect.cell.counted")); }

function selectCell(rect) {
  document.querySelectorAll("#fields rect.cell.selected").forEach((r) => r.classList.remove("selected"));
  state.review.selected = rect;
  const has = Boolean(rect);
  $("#confirm-cell").disabled = !has;
  $("#label-select").disabled = !has;
  if (!has) { $("#cell-info").textContent = "No cell selected."; return; }
  rect.classList.add("selected");
  $("#cell-info").textContent = `Image ${Number(rect.dataset.image) + 1}, cell ${rect.dataset.cell}: ` +
    `${rect.dataset.label}` + (rect.classList.contains("reviewed") ? " (reviewed)" : ` (model)`);
}

function stepCell(delta) {
  const cells = reviewCells();
  if (!cells.length) return;
  const at = cells.indexOf(state.review.selected);
  const next = at < 0 ? (delta > 0 ? 0 : cells.length - 1) : Math.min(Math.max(at + delta, 0), cells.length - 1);
  selectCell(cells[next]);
}

async function sendReview(body) {
  const rect = state.review && state.review.selected;
  if (!rect) return;
  const reviewer = $("#reviewer").value.trim();
  if (!reviewer) { showError("Enter your name as reviewer first (it is kept with every correction)."); return; }
  showError("");
  const resp = await fetch(caseUrl(`/cells/${rect.dataset.image}/${rect.dataset.cell}`), {
    method: "PATCH", headers: { ...authHeaders(), "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, reviewer }),
  });
  if (!resp.ok) { showError(await errorMessage(resp)); return; }
  markReviewed(rect, await resp.json());
  stepCell(1);
  await refreshVerified();
}

function relabelSelected(label) { return sendReview({ label }); }
function confirmSelected() { return sendReview({ confirmed: true }); }

$("#confirm-cell").addEventListener("click", confirmSelected);
$("#label-select").addEventListener("change", (ev) => {
  const lab = ev.target.value;
  ev.target.value = "";
  if (lab) relabelSelected(lab);
});

document.addEventListener("keydown", (ev) => {
  if (!state.review || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const tag = (ev.target && ev.target.tagName) || "";
  if (["INPUT", "TEXTAREA", "SELECT"].includes(tag)) return;
  if (ev.key === "ArrowRight" || ev.key === "n") { ev.preventDefault(); stepCell(1); }
  else if (ev.key === "ArrowLeft" || ev.key === "p") { ev.preventDefault(); stepCell(-1); }
  else if (ev.key === "Enter" || ev.key === "c") { ev.preventDefault(); confirmSelected(); }
  else if (/^[0-9]$/.test(ev.key)) {
    ev.preventDefault();
    relabelSelected(KEY_LABELS[(Number(ev.key) + 9) % 10]);
  }
});

function statusText(r) {
  const label = { verified: "verified", in_review: "in review", unreviewed: "unreviewed" }[r.status] || r.status;
  return `${label}: ${r.reviewed_cells} of ${r.counted_cells} counted cells reviewed` +
    (typeof r.changed_cells === "number" ? `, ${r.changed_cells} relabelled` : "");
}

async function refreshVerified() {
  const resp = await fetch(caseUrl("/report"), { headers: authHeaders() });
  if (!resp.ok) { showError(await errorMessage(resp)); return; }
  const r = await resp.json();
  const status = $("#case-status");
  status.textContent = statusText(r);
  status.className = "status " + r.status;
  status.dataset.status = r.status;
  status.dataset.reviewed = String(r.reviewed_cells);
  $("#counts-kind").textContent = r.reviewed_cells ? "(verified: reviewed labels)" : "(model labels)";
  renderCounts(r.counts || {});
  renderFindings(r.findings || {});
  renderDifferentials(r.differentials || []);
}

// ---- stored cases ------------------------------------------------------------------------------
$("#load-cases").addEventListener("click", loadCases);

async function loadCases() {
  showError("");
  const resp = await fetch("/v1/cases?limit=50", { headers: authHeaders() });
  if (!resp.ok) { showError(await errorMessage(resp)); return; }
  const page = await resp.json();
  const items = page.cases.map((c) => {
    const li = el("li");
    li.dataset.caseId = c.case_id;
    const open = el("button", "Open");
    open.type = "button";
    open.addEventListener("click", () => openCase(c.case_id));
    li.append(open, el("span", new Date(c.created_at).toLocaleString()),
      el("span", (c.images || []).join(", ")), el("span", statusText(c), "status " + c.status));
    return li;
  });
  if (!items.length) items.push(el("li", "No stored case yet."));
  $("#cases").replaceChildren(...items);
}

async function openCase(caseId) {
  showError("");
  setStatus("Opening case…");
  await loadColors();
  const resp = await fetch("/v1/cases/" + encodeURIComponent(caseId), { headers: authHeaders() });
  if (!resp.ok) { showError(await errorMessage(resp)); setStatus(""); return; }
  const stored = await resp.json();
  const images = stored.report.images || [];
  const srcs = await Promise.all(images.map(async (im, i) => {
    if (im.error) return null;
    const r = await fetch(`/v1/cases/${encodeURIComponent(caseId)}/images/${i}`, { headers: authHeaders() });
    return r.ok ? URL.createObjectURL(await r.blob()) : null;
  }));
  render(stored.report, srcs);
  startReview(caseId, images);
  await refreshVerified();
  setStatus("Case " + caseId + " opened.");
}
