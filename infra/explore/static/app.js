// tagscale explorer: three views (Browse, Track, Summary) over the JSON API, routed by the URL hash;
// the review desk (#/review?tag=T) is review.js's.
// Plain DOM calls, no framework and no build step; text from the catalog is only ever set as text.
"use strict";

const app = document.getElementById("app");
const PAGE = 20;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value; // through the DOM: the CSP refuses inline style attributes
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function bar(score, threshold) {
  return el("div", { class: "bar", title: score.toFixed(3) },
    el("span", { style: `width:${Math.max(0, Math.min(1, score)) * 100}%` }),
    threshold === null || threshold === undefined ? null : el("i", { style: `left:${threshold * 100}%`, title: `threshold ${threshold}` }));
}

function trackLink(id) {
  return el("a", { href: "#/track/" + encodeURIComponent(id), class: "track-link" }, id);
}

function show(...nodes) {
  app.replaceChildren(...nodes.flat());
  document.getElementById("nav-browse").classList.toggle("active", !/^#\/(summary|review)/.test(location.hash));
  document.getElementById("nav-summary").classList.toggle("active", location.hash.startsWith("#/summary"));
}

// ---------------------------------------------------------------- Browse

function browseState() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  return { tag: query.get("tag") || "", min: query.get("min") || "0.5", q: query.get("q") || "", offset: Number(query.get("offset") || 0) };
}

function setBrowse(state) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) if (value !== "" && value !== 0) query.set(key, value);
  location.hash = "#/?" + query.toString();
}

function filterQuery(state) {
  const query = new URLSearchParams({ min: state.min, q: state.q });
  if (state.tag) query.set("tag", state.tag);
  return query;
}

async function browse() {
  const state = browseState();
  const tags = await api("/api/tags");
  if (!state.tag && tags.length) state.tag = tags[0].tag;
  const current = tags.find((tag) => tag.tag === state.tag);
  const calibrated = current && Object.keys(current.thresholds).length > 0;

  const list = el("div", { class: "tag-list" }, tags.map((tag) =>
    el("button", { class: "tag-filter" + (tag.tag === state.tag ? " active" : ""), "data-tag": tag.tag,
      onclick: () => setBrowse({ ...state, tag: tag.tag, offset: 0, min: state.min === "calibrated" && !Object.keys(tag.thresholds).length ? "0.5" : state.min }) },
      el("span", {}, tag.tag), el("span", { class: "muted" }, tag.tracks_above_0_5))));

  const search = el("input", { type: "search", id: "search", placeholder: "track id or uri", value: state.q });
  search.addEventListener("change", () => setBrowse({ ...state, q: search.value, offset: 0 }));
  const minimum = el("input", { type: "number", id: "min", min: 0, max: 1, step: 0.05, value: state.min === "calibrated" ? "" : state.min,
    disabled: state.min === "calibrated" ? "" : null });
  minimum.addEventListener("change", () => setBrowse({ ...state, min: minimum.value || "0", offset: 0 }));
  const useThreshold = calibrated ? el("label", {},
    el("input", { type: "checkbox", id: "calibrated", checked: state.min === "calibrated" ? "" : null,
      onchange: (event) => setBrowse({ ...state, min: event.target.checked ? "calibrated" : "0.5", offset: 0 }) }),
    " calibrated threshold") : null;

  const page = await api("/api/tracks?" + new URLSearchParams({ ...Object.fromEntries(filterQuery(state)), limit: PAGE, offset: state.offset }));
  const rows = page.tracks.map((track) => el("tr", {},
    el("td", {}, trackLink(track.track_id)),
    el("td", {}, track.score === null ? "" : track.score.toFixed(3)),
    el("td", {}, track.score === null ? "" : bar(track.score, current && current.thresholds[track.run])),
    el("td", {}, track.top_tags.map((tag) => el("span", { class: "chip" }, `${tag.tag} ${tag.score.toFixed(2)}`))),
    el("td", {}, track.run),
    el("td", { class: "uri", title: track.uri }, track.uri)));
  const last = Math.min(state.offset + PAGE, page.total);
  const pager = el("div", { class: "pager" },
    el("button", { id: "prev", disabled: state.offset === 0 ? "" : null, onclick: () => setBrowse({ ...state, offset: Math.max(0, state.offset - PAGE) }) }, "‹ previous"),
    el("span", { id: "count" }, page.total ? `${state.offset + 1}–${last} of ${page.total}` : "no tracks"),
    el("button", { id: "next", disabled: last >= page.total ? "" : null, onclick: () => setBrowse({ ...state, offset: state.offset + PAGE }) }, "next ›"));

  show(el("div", { class: "browse" },
    el("aside", {}, el("h2", {}, "Tags"), el("p", { class: "muted" }, "tracks above 0.5"), list),
    el("section", {},
      el("h1", { id: "title" }, state.tag ? `Tracks tagged “${state.tag}”` : "Tracks"),
      el("div", { class: "controls" },
        search, el("label", {}, "min score ", minimum), useThreshold,
        el("a", { id: "export", href: "/api/tracks.csv?" + filterQuery(state) }, "Export CSV")),
      el("table", { id: "results" }, el("thead", {}, el("tr", {}, ["track", "score", "", "top tags", "run", "uri"].map((h) => el("th", {}, h)))), el("tbody", {}, rows)),
      pager)));
  if (window.curate) await window.curate.browse(state.tag); // curate.js: a link to the tag's review desk
}

// ---------------------------------------------------------------- Track

async function track(id) {
  const info = await api("/api/tracks/" + encodeURIComponent(id));
  const audio = el("audio", { id: "player", controls: "", preload: "auto", src: "/api/tracks/" + encodeURIComponent(id) + "/audio" });
  const runs = info.runs.map((run) => el("div", { class: "run" },
    el("h2", {}, `${run.run}: ${run.model.name} ${run.model.version}`),
    el("table", { class: "scores", "data-run": run.run }, run.scores.map((score) => el("tr", { class: "score-row", "data-tag": score.tag },
      el("td", { class: "tag-name" }, score.tag), el("td", {}, score.score.toFixed(3)), el("td", { class: "bar-cell" }, bar(score.score, score.threshold)))))));
  const similar = el("div", { id: "similar" }, el("p", { class: "muted" }, "finding similar tracks…"));
  show(el("h1", { id: "title" }, info.track_id),
    el("div", { class: "track" },
      el("section", {},
        el("div", { class: "meta" },
          el("span", { class: "muted" }, "uri"), el("span", {}, info.uri),
          el("span", { class: "muted" }, "duration"), el("span", {}, `${info.duration_s.toFixed(1)} s`),
          el("span", { class: "muted" }, "runs"), el("span", {}, info.runs.map((run) => `${run.run} (${run.model.name} ${run.model.version}, ${run.n_patches} patches)`).join("; "))),
        audio, info.segments ? heatmap(id, audio, info.duration_s) : null, runs),
      el("aside", {}, el("h2", {}, "Similar tracks"), similar)));
  if (window.curate) await window.curate.track(info); // curate.js: labels and the review queue
  try {
    const found = await api("/api/tracks/" + encodeURIComponent(id) + "/similar");
    similar.replaceChildren(found.length ? el("table", {}, found.map((other) => el("tr", {},
      el("td", {}, trackLink(other.track_id)), el("td", {}, other.similarity.toFixed(3)),
      el("td", {}, (other.shared_tags || []).map((tag) => el("span", { class: "chip" }, tag)))))) : el("p", { class: "muted" }, "none"));
  } catch (error) {
    similar.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

// ---------------------------------------------------------------- Summary

function histogram(counts) {
  const width = 200, height = 36, most = Math.max(1, ...counts), step = width / counts.length;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "hist");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  counts.forEach((count, i) => {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const h = (count / most) * height;
    rect.setAttribute("x", i * step);
    rect.setAttribute("y", height - h);
    rect.setAttribute("width", step - 1);
    rect.setAttribute("height", h);
    rect.append(Object.assign(document.createElementNS("http://www.w3.org/2000/svg", "title"), { textContent: `${(i / counts.length).toFixed(2)}–${((i + 1) / counts.length).toFixed(2)}: ${count}` }));
    svg.append(rect);
  });
  return svg;
}

async function summary() {
  const stats = await api("/api/stats");
  const sections = stats.runs.map((run) => el("section", { class: "run-summary" },
    el("h2", {}, `${run.run}: ${run.tracks} tracks`),
    el("table", { class: "tag-stats" },
      el("tr", {}, ["tag", "tracks above 0.5", "calibrated threshold", "score histogram (0 → 1)"].map((h) => el("th", {}, h))),
      run.tags.map((tag) => el("tr", {},
        el("td", {}, el("a", { href: "#/?" + new URLSearchParams({ tag: tag.tag }) }, tag.tag)),
        el("td", {}, tag.tracks_above_0_5),
        el("td", {}, tag.threshold === null ? "" : `${tag.threshold.toFixed(3)} (${tag.tracks_above_threshold} tracks)`),
        el("td", {}, histogram(tag.histogram))))),
    el("h2", {}, "Dead letters"),
    run.dead_letters.length ? el("table", { class: "dead-letters" },
      el("tr", {}, ["stage", "reason", "tracks"].map((h) => el("th", {}, h))),
      run.dead_letters.map((entry) => el("tr", {}, el("td", {}, entry.stage), el("td", {}, entry.reason), el("td", {}, entry.count))))
      : el("p", { class: "muted" }, "none")));
  show(el("h1", { id: "title" }, `Summary: ${stats.tracks} tracks, ${stats.dead_letters} dead letters`), sections);
  if (window.curate) await window.curate.summary(stats); // curate.js: decisions, agreement, learning curves
}

// ---------------------------------------------------------------- routing

async function route() {
  const hash = location.hash || "#/";
  try {
    if (hash.startsWith("#/track/")) await track(decodeURIComponent(hash.slice("#/track/".length)));
    else if (hash.startsWith("#/review")) await window.review.open(new URLSearchParams(hash.split("?")[1] || "").get("tag") || "");
    else if (hash.startsWith("#/summary")) await summary();
    else await browse();
  } catch (error) {
    show(el("p", { class: "error", id: "error" }, error.message));
  }
  document.body.dataset.ready = hash;  // lets the browser tests wait for a rendered view
}

window.addEventListener("hashchange", route);
route();
