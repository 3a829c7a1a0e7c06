// tagscale explorer: the curator's part (only with `tagscale explore --labels DIR`).
// On a Track page: yes / no on each tag's score row, an "add tag" box and a link to the review
// desk (review.js); on Browse, the selected tag's desk; on the Summary, how many decisions agree
// with the model, the decisions per tag and, with --probe, the probe's learning curves. Uses el()
// and api() of app.js (loaded after this file; both are called only once a page renders).
// Catalog text is only ever set as text.
"use strict";

window.curate = (() => {
  let session = null; // the promise of GET /api/session: {token, labels, probe}
  const REVIEW_KEY = "tagscale-review-tag"; // the tag last reviewed, offered again on Track pages
  const SVG = "http://www.w3.org/2000/svg";

  function getSession() {
    if (!session) session = api("/api/session");
    return session;
  }

  async function post(body) {
    const { token } = await getSession();
    // The token goes in a header (never a cookie), so a page on another site cannot send it.
    const response = await fetch("/api/labels", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Tagscale-Token": token },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer;
  }

  function deskLink(tag, text, id) {
    return el("a", { class: "review-link", id, href: "#/review?" + new URLSearchParams({ tag }),
      title: `is each track “${tag}”? one question at a time, by key` }, text || `review “${tag}” ›`);
  }

  // ---------------------------------------------------------------- Track page

  // A decision records the run whose row it was made on (the first run for a tag no run has).
  function verdictCells(tag, run, decide) {
    return [
      el("td", { class: "verdict" }, "—"),
      el("td", { class: "decide" },
        el("button", { class: "label-yes", title: `yes: the track is “${tag}”`, onclick: () => decide(tag, "yes", run) }, "yes"),
        el("button", { class: "label-no", title: `no: the track is not “${tag}”`, onclick: () => decide(tag, "no", run) }, "no")),
    ];
  }

  async function track(info) {
    const { labels } = await getSession();
    if (!labels) return; // without --labels: no buttons, nothing to write to
    const page = document.querySelector(".track > section");
    const runTags = [...new Set(info.scores.map((score) => score.tag))].sort();
    const status = el("p", { id: "label-status", class: "muted" });
    const extra = el("table", { id: "labels-extra", class: "scores" });
    const showVerdicts = async () => {
      const decided = Object.fromEntries((await api("/api/labels?" + new URLSearchParams({ track_id: info.track_id }))).labels
        .map((record) => [record.tag, record.verdict]));
      // Tags the runs lack (added here) get rows of their own, under the runs.
      const others = Object.keys(decided).filter((tag) => !runTags.includes(tag)).sort();
      extra.replaceChildren(...others.map((tag) => el("tr", { class: "score-row", "data-tag": tag }, el("td", { class: "tag-name" }, tag))));
      extra.hidden = !others.length;
      for (const row of page.querySelectorAll("tr.score-row")) {
        if (!row.classList.contains("label-row")) {
          row.classList.add("label-row");
          row.append(...verdictCells(row.dataset.tag, row.closest("table").dataset.run, decide));
        }
        const verdict = decided[row.dataset.tag];
        const cell = row.querySelector("td.verdict");
        cell.textContent = verdict || "—";
        cell.className = "verdict verdict-" + (verdict || "none");
        row.dataset.verdict = verdict || "";
      }
    };
    const decide = async (tag, verdict, run) => {
      try {
        await post({ track_id: info.track_id, tag, verdict, ...(run ? { run } : {}) });
        await showVerdicts();
        status.className = "muted";
        status.textContent = `${tag}: ${verdict}`;
      } catch (error) {
        status.className = "error";
        status.textContent = error.message;
      }
    };
    const input = el("input", { id: "label-new", list: "label-tags", maxlength: 100, placeholder: "a run's tag or a new name" });
    const add = el("button", { id: "label-add", onclick: () => input.value.trim() && decide(input.value.trim(), "yes") }, "add tag");
    input.addEventListener("keydown", (event) => { if (event.key === "Enter") add.click(); });
    const chosen = runTags.includes(sessionStorage.getItem(REVIEW_KEY)) ? sessionStorage.getItem(REVIEW_KEY) : info.scores[0]?.tag;
    const select = el("select", { id: "review-tag" }, runTags.map((tag) => el("option", { value: tag, selected: tag === chosen ? "" : null }, tag)));
    const link = deskLink(chosen || "", "open the review desk ›", "review-link");
    select.addEventListener("change", () => {
      sessionStorage.setItem(REVIEW_KEY, select.value);
      link.href = "#/review?" + new URLSearchParams({ tag: select.value });
    });
    page.append(el("section", { id: "labels" },
      extra,
      el("div", { class: "controls" }, input, el("datalist", { id: "label-tags" }, runTags.map((tag) => el("option", { value: tag }))), add),
      status,
      el("div", { id: "review", class: "controls" }, el("span", {}, "Review one track at a time, by key:"), select, runTags.length ? link : null)));
    await showVerdicts();
  }

  // ---------------------------------------------------------------- Browse

  async function browse(tag) {
    const { labels } = await getSession();
    const aside = document.querySelector(".browse > aside");
    if (!labels || !tag || !aside) return;
    aside.insertBefore(el("p", {}, deskLink(tag, `review “${tag}” one at a time ›`, "review-link")), aside.querySelector(".tag-list"));
  }

  // ---------------------------------------------------------------- Summary

  function svgNode(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A learning curve as a small inline SVG: ROC-AUC (blue) and PR-AUC (orange) against the
  // number of labels (x from 0), the y axis from 0 to 1 with a dashed line at 0.5 (chance for
  // ROC-AUC). Each point's title gives its numbers.
  function learningCurve(points) {
    const width = 220, height = 64, pad = 4, most = Math.max(...points.map((p) => p.labels));
    const x = (labels) => pad + (labels / most) * (width - 2 * pad);
    const y = (auc) => pad + (1 - Math.max(0, Math.min(1, auc))) * (height - 2 * pad);
    const svg = svgNode("svg", { class: "curve", width, height, viewBox: `0 0 ${width} ${height}` });
    svg.append(svgNode("line", { x1: pad, x2: width - pad, y1: y(0.5), y2: y(0.5), class: "chance" }));
    for (const [key, name] of [["roc_auc", "ROC-AUC"], ["pr_auc", "PR-AUC"]]) {
      svg.append(svgNode("polyline", { class: key, points: points.map((p) => `${x(p.labels).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ") }));
      for (const p of points) {
        const dot = svgNode("circle", { class: key, cx: x(p.labels).toFixed(1), cy: y(p[key]).toFixed(1), r: 2.5 });
        dot.append(svgNode("title", {}, `${p.labels} labels: ${name} ${p[key].toFixed(3)}`));
        svg.append(dot);
      }
    }
    return svg;
  }

  async function labelSummary(session) {
    const counts = session.labels ? (await api("/api/labels/tags")).tags : [];
    const report = session.probe ? await api("/api/probe/report") : { tags: {} };
    const byTag = Object.fromEntries(counts.map((entry) => [entry.tag, entry]));
    const tags = [...new Set([...Object.keys(byTag), ...Object.keys(report.tags)])].sort();
    if (!tags.length) return null;
    const rows = tags.map((tag) => {
      const count = byTag[tag], entry = report.tags[tag];
      const curve = entry && entry.learning_curve.length ? entry.learning_curve : null;
      return el("tr", { class: "label-summary-row", "data-tag": tag },
        el("td", {}, tag),
        el("td", { class: "decisions" }, count ? `${count.decisions} (${count.yes} yes, ${count.no} no)` : ""),
        session.labels ? el("td", {}, deskLink(tag, "review ›")) : null,
        session.probe ? el("td", { class: "cv" }, entry && entry.cv_roc_auc !== null ? `${entry.cv_roc_auc.toFixed(3)} / ${entry.cv_pr_auc.toFixed(3)}` : "too few labels") : null,
        session.probe ? el("td", { class: "learning-curve" }, curve ? learningCurve(curve) : "",
          curve ? el("span", { class: "muted" }, ` ${curve[0].labels}–${curve[curve.length - 1].labels} labels`) : null) : null);
    });
    const head = ["tag", "decisions", session.labels ? "" : null, session.probe ? "cv ROC-AUC / PR-AUC" : null,
      session.probe ? el("span", {}, "learning curve: ", el("span", { class: "roc_auc" }, "ROC-AUC"), " ", el("span", { class: "pr_auc" }, "PR-AUC"), " by labels") : null];
    return el("section", { id: "label-summary" },
      el("h2", {}, session.probe ? `Labels, and the learning curves of probe “${report.probe}”` : "Labels"),
      el("table", { class: "label-summary" }, el("tr", {}, head.filter((h) => h !== null).map((h) => el("th", {}, h))), rows));
  }

  async function summary(stats) {
    const current = await getSession();
    // One more column for the tag tables app.js drew, row for row in the order of stats.
    document.querySelectorAll("table.tag-stats").forEach((table, index) => {
      const tags = stats.runs[index].tags;
      if (!tags.length || !tags[0].labels) return;
      const rows = table.querySelectorAll("tr");
      rows[0].append(el("th", {}, "decisions agreeing"));
      tags.forEach((tag, i) => rows[i + 1].append(el("td", { class: "agreement" },
        tag.labels.decisions ? `${tag.labels.agree} of ${tag.labels.decisions}` : "")));
    });
    const section = await labelSummary(current);
    if (section) document.getElementById("app").insertBefore(section, document.querySelector(".run-summary"));
  }

  return { track, browse, summary, post, session: getSession };
})();
