// morph review page: plain JS, no build step. Talks to the same /v1 API as any client.
// Every value from the server is inserted with textContent (never innerHTML).
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { files: [], colors: {} };

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
    setStatus("Done.");
  } catch (e) {
    showError("Could not reach the server: " + e.message);
    setStatus("");
  } finally {
    $("#analyze").disabled = false;
  }
});

// ---- rendering -----------------------------------------------------------------------------
function render(report) {
  renderFields(report.images || []);
  renderCounts(report.counts || {});
  renderFindings(report.findings || {});
  renderDifferentials(report.differentials || []);
  $("#warnings").replaceChildren(...(report.warnings || []).map((w) => el("li", w)));
  $("#report-disclaimer").textContent = report.disclaimer || "";
  $("#results").hidden = false;
}

function renderFields(images) {
  const box = $("#fields");
  box.replaceChildren();
  for (const im of images) {
    const fig = el("figure", null, "field");
    fig.dataset.path = im.path;
    if (im.error) {
      fig.classList.add("failed");
      fig.append(el("figcaption", `${im.path}: could not be analysed: ${im.error.message}`, "field-error"));
      box.append(fig);
      continue;
    }
    const stage = el("div", null, "stage");
    const img = document.createElement("img");
    img.alt = `overlay of ${im.path}`;
    img.className = "overlay";
    if (im.overlay_png) img.src = "data:image/png;base64," + im.overlay_png;
    stage.append(img, cellLayer(im));
    const counted = im.cells.filter((c) => !c.touches_border).length;
    fig.append(stage, el("figcaption",
      `${im.path}: ${im.width}×${im.height}, ${counted} cells counted` +
      (im.median_rbc_diameter_um ? `, median RBC ${im.median_rbc_diameter_um} µm` : "")));
    for (const w of im.warnings || []) fig.append(el("p", w, "warn"));
    box.append(fig);
  }
}

function cellLayer(im) {
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
    r.dataset.tip = tip;
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
