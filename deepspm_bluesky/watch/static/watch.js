// The watch page: polls /api/status every second and redraws when the survey changed.
"use strict";

const POLL_MS = 1000;
const PAGE = 24;
const SVG = "http://www.w3.org/2000/svg";
let version = null;      // the drawn survey's version (uid:images:actions:stopped:corrections)
let survey = null;       // the drawn snapshot
let clockOffset = 0;     // server clock minus browser clock, seconds
let gallery = { uid: null, offset: 0 };
let polls = 0;

const $ = (id) => document.getElementById(id);
const kind = (verdict) => (verdict === "good" || verdict === "bad") ? verdict : "check";
const pct = (x) => x == null ? "–" : `${(100 * x).toFixed(1)} %`;
const num = (x, digits = 3) => x == null ? "–" : Number(x).toFixed(digits);
const clock = (t) => t == null ? "–" : new Date(t * 1000).toLocaleTimeString();
const date = (t) => t == null ? "–" : new Date(t * 1000).toLocaleString();
const imageUrl = (uid, index) => `/api/runs/${uid}/images/${index}.png`;

function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–";
  seconds = Math.max(0, seconds);
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

async function poll() {
  try {
    const status = await getJson("/api/status");
    if (status.version !== version) {
      const fresh = await getJson("/api/survey");
      const newRun = !survey || fresh.status.uid !== survey.status.uid
        || fresh.status.running !== survey.status.running;
      survey = fresh;
      version = fresh.status.version;
      draw(fresh);
      if (newRun || polls % 10 === 0) drawRuns();
      if (gallery.uid === fresh.status.uid) drawGallery();
    } else if (polls % 10 === 0) {
      drawRuns();
    }
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    drawSinceGood();
  } catch (error) {
    $("state").textContent = "no connection";
    $("state").className = "pill fail";
  }
  polls += 1;
  setTimeout(poll, POLL_MS);
}

function draw(s) {
  const st = s.status;
  $("catalog").textContent = s.catalog || "";
  if (!st.uid) {
    $("state").textContent = "no survey yet";
    return;
  }
  const run = s.run;
  $("state").textContent = st.running ? "running" : (run.exit_status || "ended");
  $("state").className = `pill ${st.running ? "running" : run.exit_status}`;
  $("run-id").textContent = `run ${st.uid.slice(0, 8)} · scan ${run.scan_id ?? "–"} · ` +
    `${run.backend || "?"} · started ${date(run.time)}`;
  $("mode").textContent = run.mode || "–";
  $("images").textContent = run.max_images ? `${st.images} / ${run.max_images}` : st.images;
  $("good-fraction").textContent = pct(st.good_fraction);
  const area = s.area;
  $("area").textContent = area.index == null ? "–" :
    `#${area.index}` + (area.changes ? ` (${area.changes} moves)` : "");
  $("outages").textContent = s.outages.count ?
    `${s.outages.count} (${duration(s.outages.total_s)})` : "none";
  $("corrections").textContent = st.corrections;
  $("reason").textContent = st.running ? "" : `ended: ${run.reason}`;
  clockOffset = (s.server_time ?? Date.now() / 1000) - Date.now() / 1000;
  drawLatest(st.uid, s.latest);
  drawChart(s.chart, s.latest);
  drawMap(area);
  drawActions(s.actions);
}

function drawSinceGood() {
  if (!survey || !survey.status.uid) return;
  const st = survey.status;
  const now = st.running ? Date.now() / 1000 + clockOffset : st.last_event_time;
  $("since-good").textContent = st.last_good_time == null ? "none yet" :
    duration(now - st.last_good_time);
}

function reviewText(review) {
  if (!review) return "";
  return review.review === "wrong" ? `corrected by a person: tip ${review.label}` :
    `confirmed by a person: tip ${review.label}`;
}

function drawLatest(uid, latest) {
  const wrong = $("latest-wrong"), right = $("latest-right");
  if (!latest) {
    wrong.disabled = right.disabled = true;
    return;
  }
  const img = $("latest-image");
  const url = imageUrl(uid, latest.index);
  if (img.getAttribute("src") !== url) img.src = url;
  img.dataset.index = latest.index;
  $("latest-index").textContent = `#${latest.index} · ${clock(latest.time)}`;
  $("latest-verdict").textContent = latest.verdict;
  $("latest-verdict").className = `verdict ${kind(latest.verdict)}`;
  $("latest-p-good").textContent = num(latest.p_good);
  $("latest-review").textContent = reviewText(latest.review);
  const judged = kind(latest.verdict) !== "check";
  wrong.disabled = right.disabled = !judged;
  wrong.onclick = () => review(uid, latest.index, "wrong");
  right.onclick = () => review(uid, latest.index, "right");
}

async function review(uid, index, what) {
  try {
    await getJson(`/api/runs/${uid}/images/${index}/review`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ review: what }),
    });
    version = null;  // redraw at the next poll
    if (gallery.uid === uid) drawGallery();
    drawRuns();
  } catch (error) {
    alert(`Could not store the review: ${error.message}`);
  }
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, content, attrs = {}) {
  const node = el("text", { x, y, "font-size": 11, fill: "#6b7280", ...attrs }, parent);
  node.textContent = content;
  return node;
}

function drawChart(chart, latest) {
  const svg = $("chart");
  svg.replaceChildren();
  const W = 520, H = 260, left = 40, right = 10, top = 10, bottom = 30;
  const points = chart.points;
  const last = points.length ? points[points.length - 1][0] : 1;
  const xmax = Math.max(1, last);
  const x = (i) => left + (W - left - right) * i / xmax;
  const y = (p) => top + (H - top - bottom) * (1 - p);
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    el("line", { x1: left, x2: W - right, y1: y(p), y2: y(p), stroke: "#eee" }, svg);
    text(svg, left - 6, y(p) + 4, p.toFixed(2), { "text-anchor": "end" });
  }
  el("line", { x1: left, x2: W - right, y1: y(chart.threshold), y2: y(chart.threshold),
               stroke: "#1a9850", "stroke-dasharray": "4 3" }, svg);
  text(svg, W - right, y(chart.threshold) - 4, `good ≥ ${chart.threshold}`,
       { "text-anchor": "end", fill: "#1a9850" });
  text(svg, left, H - 8, "0");
  text(svg, W - right, H - 8, `image ${Math.round(xmax)}`, { "text-anchor": "end" });
  const path = points.filter((p) => p[1] != null).map((p) => `${x(p[0])},${y(p[1])}`);
  if (path.length > 1) {
    el("polyline", { points: path.join(" "), fill: "none", stroke: "#9aa5b8",
                     "stroke-width": 1 }, svg);
  }
  const colours = { good: "#1a9850", bad: "#d73027" };
  for (const [i, p, verdict] of points) {
    const colour = colours[verdict] || "#7b3294";
    el("circle", { cx: x(i), cy: y(p == null ? 0 : p), r: points.length > 200 ? 1.6 : 2.6,
                   fill: colour }, svg);
  }
  $("chart-bin").textContent = chart.bin > 1 ? `(mean of ${chart.bin} images per point)` : "";
}

function mapHalfWidth(area) {
  // zoom on the ground used so far: frames, action discs and crashes, with a margin
  let reach = 50;
  const frame = area.frame_nm || 10;
  for (const [x, y] of area.frames.concat(area.crashes)) {
    reach = Math.max(reach, Math.abs(x) + frame, Math.abs(y) + frame);
  }
  for (const [x, y, , radius] of area.actions) {
    reach = Math.max(reach, Math.abs(x) + radius, Math.abs(y) + radius);
  }
  return Math.min(area.area_nm / 2, reach * 1.15);
}

function drawMap(area) {
  const svg = $("map");
  svg.replaceChildren();
  const S = 300, half = mapHalfWidth(area);
  const scale = S / (2 * half);
  const px = (xnm) => (xnm + half) * scale;
  const py = (ynm) => (half - ynm) * scale;    // y up
  el("rect", { x: 0, y: 0, width: S, height: S, fill: "#fafafa", stroke: "#ccc" }, svg);
  const edge = area.area_nm / 2;               // the approach area's border, when in view
  el("rect", { x: px(-edge), y: py(edge), width: 2 * edge * scale, height: 2 * edge * scale,
               fill: "none", stroke: "#999", "stroke-dasharray": "6 4" }, svg);
  el("line", { x1: S / 2, x2: S / 2, y1: 0, y2: S, stroke: "#eee" }, svg);
  el("line", { x1: 0, x2: S, y1: S / 2, y2: S / 2, stroke: "#eee" }, svg);
  const side = Math.max(1.5, (area.frame_nm || 10) * scale);
  const colours = { good: "#1a9850", bad: "#d73027" };
  for (const [xnm, ynm, verdict] of area.frames) {
    el("rect", { x: px(xnm) - side / 2, y: py(ynm) - side / 2, width: side, height: side,
                 fill: colours[verdict] || "#7b3294", opacity: 0.85 }, svg);
  }
  for (const [xnm, ynm, name, radius] of area.actions) {
    const disc = el("circle", { cx: px(xnm), cy: py(ynm), r: Math.max(3, radius * scale),
                                fill: "rgba(44,90,160,0.10)", stroke: "#2c5aa0",
                                "stroke-width": 1.5 }, svg);
    el("title", {}, disc).textContent = name;
  }
  for (const [xnm, ynm] of area.crashes) {
    text(svg, px(xnm), py(ynm) + 5, "✕", { "font-size": 14, fill: "#000",
                                          "text-anchor": "middle" });
  }
  text(svg, 4, S - 4, `view ${Math.round(2 * half)} nm of ${area.area_nm} nm`);
  $("map-title").textContent = area.index == null ? "" :
    `#${area.index} · ${area.frames.length} frames · ${area.actions.length} action sites · ` +
    `${area.crashes.length} crashes`;
}

function drawActions(actions) {
  const body = $("actions").querySelector("tbody");
  body.replaceChildren();
  $("no-actions").hidden = actions.length > 0;
  for (const a of actions) {
    const row = body.insertRow();
    const next = a.next_verdict == null ? "–" :
      `<span class="tag ${kind(a.next_verdict)}">${a.next_verdict}</span>` +
      (a.next_p_good == null ? "" : ` (${num(a.next_p_good, 2)})`);
    row.innerHTML = `<td>${clock(a.time)}</td><td>${escape(a.action)}</td>` +
      `<td>${escape(a.reason)}</td><td>${escape(a.outcome)}</td><td>${next}</td>`;
  }
}

function escape(value) {
  const div = document.createElement("div");
  div.textContent = value == null ? "" : String(value);
  return div.innerHTML;
}

async function drawRuns() {
  const runs = await getJson("/api/runs?limit=20");
  const body = $("runs").querySelector("tbody");
  body.replaceChildren();
  for (const r of runs) {
    const row = body.insertRow();
    row.className = r.uid === gallery.uid ? "chosen" : "";
    row.dataset.uid = r.uid;
    const end = r.exit_status ? `${r.exit_status}: ${escape(r.reason)}` : "running";
    row.innerHTML = `<td>${date(r.time)}</td><td>${r.uid.slice(0, 8)}</td>` +
      `<td>${escape(r.mode)}</td><td>${r.images ?? "…"}</td><td>${end}</td>` +
      `<td>${r.corrections}</td>`;
    row.onclick = () => { location.hash = `run=${r.uid}`; };
  }
}

async function drawGallery() {
  const page = await getJson(`/api/runs/${gallery.uid}/images?offset=${gallery.offset}` +
                             `&limit=${PAGE}`);
  $("gallery-card").hidden = false;
  $("gallery-run").textContent = `run ${gallery.uid.slice(0, 8)} (${page.images} images)`;
  const newest = page.images - gallery.offset - 1;
  $("gallery-range").textContent = page.items.length ?
    `#${newest} … #${newest - page.items.length + 1}` : "";
  $("newer").disabled = gallery.offset === 0;
  $("older").disabled = gallery.offset + PAGE >= page.images;
  const box = $("gallery");
  box.replaceChildren();
  for (const item of page.items) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.index = item.index;
    const judged = kind(item.verdict) !== "check";
    tile.innerHTML = `<img loading="lazy" src="${imageUrl(page.uid, item.index)}" ` +
      `alt="image ${item.index}">#${item.index} ` +
      `<b class="tag ${kind(item.verdict)}">${item.verdict}</b> ${num(item.p_good, 2)}` +
      `<div class="reviewed muted">${reviewText(item.review)}</div>` +
      (judged ? `<div class="buttons"><button class="wrong" type="button">✗ wrong</button>` +
                `<button class="right-btn" type="button">✓ right</button></div>` : "");
    if (judged) {
      tile.querySelector(".wrong").onclick = () => review(page.uid, item.index, "wrong");
      tile.querySelector(".right-btn").onclick = () => review(page.uid, item.index, "right");
    }
    box.appendChild(tile);
  }
}

// #run=UID (a notice's link, or a click on a survey) shows that run's images
function showLinkedRun() {
  const uid = new URLSearchParams(location.hash.slice(1)).get("run");
  if (!uid || uid === gallery.uid) return;
  gallery = { uid, offset: 0 };
  drawGallery().catch(() => {
    $("gallery-card").hidden = false;
    $("gallery-run").textContent = `no run ${uid} in this catalog`;
    $("gallery").replaceChildren();
  });
  drawRuns();
}

window.addEventListener("hashchange", showLinkedRun);
showLinkedRun();
$("newer").onclick = () => { gallery.offset = Math.max(0, gallery.offset - PAGE); drawGallery(); };
$("older").onclick = () => { gallery.offset += PAGE; drawGallery(); };
poll();
