// tagscale explorer: the Track page's tag-by-time heatmap (a run tagged with --segments).
// Rows are the track's strongest tags, columns its segments (patches) as wide as they last; a
// playhead follows the audio element, and a click on a column seeks the audio to its start.
// Only DOM calls and style properties (the page's CSP refuses inline style attributes).
"use strict";

const HEATMAP_ROWS = 12; // tags shown: the track's strongest, by their highest segment score
const HEATMAP_CELL_PX = 14;

function heatmapNode(tag, style, attrs) {
  const node = document.createElement(tag);
  Object.assign(node.style, style || {});
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

// A score in [0, 1] as a colour: pale for 0, deep blue for 1.
function heatmapColour(score) {
  const s = Math.max(0, Math.min(1, score));
  return `hsl(215, 75%, ${Math.round(97 - 62 * s)}%)`;
}

// Returns the heatmap's element at once and fills it when the segments arrive. Its time axis is
// the track's duration (durationS), so the playhead lines up with the player's; the audio past
// the last full patch, which no segment covers, stays blank. Options: `tags`, the rows to draw
// (else the strongest); `data`, the segments already fetched (drawn at once) or their promise.
function heatmap(trackId, audio, durationS, options = {}) {
  const box = heatmapNode("div", { margin: "0.75rem 0" }, { id: "heatmap", class: "heatmap" });
  if (options.data && !options.data.then) {
    drawHeatmap(box, options.data, audio, durationS, options.tags);
    return box;
  }
  box.append(heatmapNode("p", {}, { class: "muted" }));
  box.firstChild.textContent = "loading segments…";
  const data = options.data || fetch("/api/tracks/" + encodeURIComponent(trackId) + "/segments")
    .then(async (response) => {
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      return body;
    });
  data.then((body) => drawHeatmap(box, body, audio, durationS, options.tags))
    .catch((error) => {
      box.replaceChildren(heatmapNode("p", {}, { class: "error" }));
      box.firstChild.textContent = error.message;
      box.dataset.ready = "error";
    });
  return box;
}

function drawHeatmap(box, data, audio, durationS, only) {
  const segments = data.segments;
  const strongest = data.tags.map((tag, k) => ({ tag, k, top: Math.max(...segments.map((s) => s.scores[k])) }));
  strongest.sort((a, b) => b.top - a.top || a.k - b.k);
  const rows = only ? strongest.filter((row) => only.includes(row.tag)) : strongest.slice(0, HEATMAP_ROWS);
  const covered = segments.length ? segments[segments.length - 1].end_s : 0;
  const total = Math.max(covered, durationS || 0);

  const labels = heatmapNode("div", { display: "flex", flexDirection: "column", marginRight: "0.5rem", fontSize: "11px" });
  for (const row of rows) {
    const label = heatmapNode("div", { height: HEATMAP_CELL_PX + "px", lineHeight: HEATMAP_CELL_PX + "px", whiteSpace: "nowrap" });
    label.textContent = row.tag;
    labels.append(label);
  }
  const area = heatmapNode("div", { position: "relative", flex: "1", display: "flex", cursor: "pointer" }, { class: "heat-area" });
  segments.forEach((segment, i) => {
    const column = heatmapNode("div", { flex: `${Math.max(segment.end_s - segment.start_s, 0.001)} 1 0`, display: "flex", flexDirection: "column", minWidth: "1px" },
      { class: "heat-col", "data-start": segment.start_s, "data-index": i });
    for (const row of rows) {
      const score = segment.scores[row.k];
      column.append(heatmapNode("div", { height: HEATMAP_CELL_PX + "px", background: heatmapColour(score) },
        { title: `${row.tag} ${segment.start_s.toFixed(1)}–${segment.end_s.toFixed(1)} s: ${score.toFixed(3)}` }));
    }
    column.addEventListener("click", () => {
      audio.currentTime = segment.start_s;
      movePlayhead();
    });
    area.append(column);
  });
  if (total - covered > 0.001) area.append(heatmapNode("div", { flex: `${total - covered} 1 0` }, { class: "heat-rest" }));
  const playhead = heatmapNode("div", { position: "absolute", top: "0", bottom: "0", left: "0", width: "2px", background: "#d0342c", pointerEvents: "none" },
    { class: "heat-playhead" });
  area.append(playhead);

  function movePlayhead() {
    const at = total > 0 ? Math.max(0, Math.min(1, audio.currentTime / total)) : 0;
    playhead.style.left = `calc(${(at * 100).toFixed(3)}% - 1px)`;
  }
  // timeupdate fires a few times a second; while playing, each frame moves it smoothly.
  function follow() {
    movePlayhead();
    if (!audio.paused && box.isConnected) requestAnimationFrame(follow);
  }
  for (const event of ["timeupdate", "seeked", "loadedmetadata"]) audio.addEventListener(event, movePlayhead);
  audio.addEventListener("play", () => requestAnimationFrame(follow));

  const caption = heatmapNode("p", { margin: "0.25rem 0" }, { class: "muted" });
  caption.textContent = `${data.run}: ${segments.length} segments × ${rows.length} of ${data.tags.length} tags (click to seek)`;
  box.replaceChildren(caption, heatmapNode("div", { display: "flex" }));
  box.lastChild.append(labels, area);
  movePlayhead();
  box.dataset.columns = String(segments.length);
  box.dataset.ready = "1";
}
