// tagscale explorer: the curator's part (only with `tagscale explore --labels DIR`).
// On a Track page: yes / no per tag, an "add tag" box, and the review queue of a chosen tag;
// on the Summary: how many decisions agree with the model. Uses el() and api() of app.js
// (loaded after this file; both are called only once a page renders). Catalog text is only
// ever set as text.
"use strict";

window.curate = (() => {
  let session = null; // the promise of GET /api/session: {token, labels}
  const REVIEW_KEY = "tagscale-review-tag"; // the queue's tag, kept while walking from track to track

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

  function verdictText(record) {
    return record ? (record.verdict === "yes" ? "yes" : "no") : "—";
  }

  async function labelsSection(info, refresh) {
    const decided = Object.fromEntries((await api("/api/labels?" + new URLSearchParams({ track_id: info.track_id }))).labels
      .map((record) => [record.tag, record]));
    const runTags = [...new Set(info.scores.map((score) => score.tag))].sort();
    const tags = [...runTags, ...Object.keys(decided).filter((tag) => !runTags.includes(tag)).sort()];
    const status = el("p", { id: "label-status", class: "muted" });
    const decide = async (tag, verdict) => {
      try {
        await post({ track_id: info.track_id, tag, verdict });
        await refresh();
      } catch (error) {
        status.className = "error";
        status.textContent = error.message;
      }
    };
    const rows = tags.map((tag) => el("tr", { class: "label-row", "data-tag": tag },
      el("td", {}, tag),
      el("td", { class: "verdict verdict-" + verdictText(decided[tag]) }, verdictText(decided[tag])),
      el("td", {},
        el("button", { class: "label-yes", title: "the tag holds for this track", onclick: () => decide(tag, "yes") }, "confirm"),
        " ",
        el("button", { class: "label-no", title: "the tag does not hold for this track", onclick: () => decide(tag, "no") }, "reject"))));
    const input = el("input", { id: "label-new", list: "label-tags", maxlength: 100, placeholder: "a run's tag or a new name" });
    const add = el("button", { id: "label-add", onclick: () => input.value.trim() && decide(input.value.trim(), "yes") }, "add tag");
    input.addEventListener("keydown", (event) => { if (event.key === "Enter") add.click(); });
    return el("section", { id: "labels" },
      el("h2", {}, "Labels"),
      el("table", { class: "labels" }, el("tr", {}, ["tag", "verdict", ""].map((h) => el("th", {}, h))), rows),
      el("div", { class: "controls" }, input, el("datalist", { id: "label-tags" }, runTags.map((tag) => el("option", { value: tag }))), add),
      status);
  }

  async function reviewSection(info, allTags) {
    const chosen = sessionStorage.getItem(REVIEW_KEY) || info.scores[0]?.tag || allTags[0];
    const select = el("select", { id: "review-tag" }, allTags.map((tag) =>
      el("option", { value: tag, selected: tag === chosen ? "" : null }, tag)));
    const list = el("ol", { id: "review-queue" });
    const load = async () => {
      sessionStorage.setItem(REVIEW_KEY, select.value);
      const queue = await api("/api/review?" + new URLSearchParams({ tag: select.value, limit: 10 }));
      list.replaceChildren(...queue.tracks.map((track) => el("li", {},
        trackLink(track.track_id), " ",
        el("span", { class: "muted" }, `${track.score.toFixed(3)} (threshold ${track.threshold.toFixed(3)}, ${track.run})`))));
      if (!queue.tracks.length) list.replaceChildren(el("li", { class: "muted" }, "every track is labelled"));
    };
    select.addEventListener("change", load);
    await load();
    return el("section", { id: "review" },
      el("h2", {}, "Review next"),
      el("p", { class: "muted" }, "unlabelled tracks whose score is closest to the threshold"),
      select, list);
  }

  async function track(info) {
    const { labels } = await getSession();
    if (!labels) return; // without --labels: no buttons, nothing to write to
    const page = document.querySelector(".track > section");
    const allTags = (await api("/api/tags")).map((tag) => tag.tag).sort();
    const holder = el("div", { id: "curation" });
    const refresh = async () => holder.replaceChildren(await labelsSection(info, refresh), await reviewSection(info, allTags));
    await refresh();
    page.append(holder);
  }

  function summary(stats) {
    // One more column for the tag tables app.js drew, row for row in the order of stats.
    document.querySelectorAll("table.tag-stats").forEach((table, index) => {
      const tags = stats.runs[index].tags;
      if (!tags.length || !tags[0].labels) return;
      const rows = table.querySelectorAll("tr");
      rows[0].append(el("th", {}, "decisions agreeing"));
      tags.forEach((tag, i) => rows[i + 1].append(el("td", { class: "agreement" },
        tag.labels.decisions ? `${tag.labels.agree} of ${tag.labels.decisions}` : "")));
    });
  }

  return { track, summary };
})();
