// tagscale explorer: the review desk, #/review?tag=T (with `tagscale explore --labels DIR`).
// One question at a time, "is this track T?", answered with one key: y yes, n no, s skip, u undo,
// space or p plays the part of the track where T scores highest, ? shows the keys. The questions
// come in /api/review's order (closest to the threshold first) and are fetched ahead, so a key
// shows the next question at once; the answers are posted behind it one after another, so a
// correction always lands after the answer it corrects (the latest verdict wins). Uses el(),
// api() and bar() of app.js, heatmap() of heatmap.js and curate.post() of curate.js.
"use strict";

window.review = (() => {
  const BATCH = 20; // questions fetched at a time
  const REFILL_AT = 10; // fetch more when fewer than this are waiting (about 10 s of answers ahead)
  const AHEAD = 3; // questions whose segments are fetched before they are shown
  const MAX_LIMIT = 500; // /api/review's largest page
  const KEYS = [
    ["y", "yes: the track is {tag} (stored at once)"],
    ["n", "no: it is not"],
    ["s", "skip: no decision; not asked again until the page is reloaded"],
    ["u", "undo the last answer: its question comes back, and the new answer corrects it"],
    ["space / p", "play or pause, from the segment where {tag} scores highest"],
    ["?", "show or hide these keys"],
  ];
  let desk = null; // the open desk's state; null on every other page

  // ------------------------------------------------------------ the queue

  function segmentsOf(question) {
    // Fetched once per track, ahead of its question; the answer is kept to draw without waiting.
    if (!question.segments || question.segmentData !== undefined) return;
    question.segmentData = null;
    question.segmentPromise = api("/api/tracks/" + encodeURIComponent(question.track_id) + "/segments")
      .then((data) => (question.segmentData = data));
    question.segmentPromise.catch(() => {}); // drawn as an error by heatmap() when shown
  }

  function prefetch() {
    desk.queue.slice(0, AHEAD).forEach(segmentsOf);
    const open = desk.queue.length + (desk.current ? 1 : 0) + desk.skipped.size + desk.writing;
    if (desk.queue.length < REFILL_AT && !desk.exhausted && !desk.refilling) desk.refilling = refill(open);
  }

  async function refill(open) {
    // The server leaves out the tracks decided for T; this page leaves out those it has already
    // seen (waiting, skipped, or answered but not yet stored), so the page asks for that many more.
    const limit = Math.min(MAX_LIMIT, open + BATCH);
    const state = desk;
    let page = null;
    try {
      page = await api("/api/review?" + new URLSearchParams({ tag: state.tag, limit }));
    } catch (error) {
      if (state === desk) say(error.message, "error");
    }
    state.refilling = null;
    if (state !== desk || !page) return;
    const fresh = page.tracks.filter((question) => !state.seen.has(question.track_id));
    fresh.forEach((question) => state.seen.add(question.track_id));
    state.queue.push(...fresh);
    // Fewer than asked for: the server has no more; a full page of known tracks: none to reach.
    if (page.tracks.length < limit || !fresh.length) state.exhausted = true;
    if (!state.current) next();
    else prefetch();
  }

  // ------------------------------------------------------------ answers

  const agrees = (question, verdict) => (question.score >= question.threshold) === (verdict === "yes");

  function answer(verdict) {
    const question = desk.current;
    if (!question) return;
    const previous = question.previous;
    const change = previous
      ? { decided: 0, left: 0, agree: agrees(question, verdict) - agrees(question, previous) }
      : { decided: 1, left: -1, agree: agrees(question, verdict) ? 1 : 0 };
    count(change, 1);
    const entry = { question, verdict, change };
    desk.history.push(entry);
    store(entry);
    next();
    say(`${question.track_id}: ${verdict}${previous ? ` (was ${previous})` : ""}`);
  }

  function store(entry) {
    // One write at a time, in the order of the keys.
    const state = desk;
    state.writing += 1;
    updatePending();
    state.writes = state.writes.then(() => window.curate.post({ track_id: entry.question.track_id, tag: state.tag, verdict: entry.verdict, run: entry.question.run }))
      .catch((error) => {
        if (state !== desk) return;
        // Not stored: the question is asked again next, and the counts go back.
        count(entry.change, -1);
        state.history = state.history.filter((other) => other !== entry);
        if (state.current) state.queue.unshift(state.current);
        state.queue.unshift(entry.question);
        next();
        say(`not stored: ${error.message}`, "error");
      })
      .finally(() => {
        state.writing -= 1;
        if (state === desk) updatePending();
      });
  }

  function skip() {
    const question = desk.current;
    if (!question) return;
    if (question.previous) {
      // An undone answer skipped: it stands as stored.
      desk.history.push({ question, verdict: question.previous, change: { decided: 0, left: 0, agree: 0 } });
      say(`${question.track_id}: kept ${question.previous}`);
    } else {
      desk.skipped.add(question.track_id);
      count({ decided: 0, left: -1, agree: 0 }, 1);
      say(`${question.track_id}: skipped`);
    }
    next();
  }

  function undo() {
    const entry = desk.history.pop();
    if (!entry) return say("nothing to undo");
    if (desk.current) desk.queue.unshift(desk.current);
    entry.question.previous = entry.verdict;
    desk.queue.unshift(entry.question);
    next();
    say(`${entry.question.track_id}: you said ${entry.verdict}; answer again to correct it (s keeps it)`);
  }

  function count(change, sign) {
    desk.counts.decided += sign * change.decided;
    desk.counts.left += sign * change.left;
    desk.counts.agree += sign * change.agree;
    drawProgress();
  }

  // ------------------------------------------------------------ drawing

  function next() {
    if (desk.current && desk.current.audio) stopAudio(desk.current.audio);
    desk.current = desk.queue.shift() || null;
    draw();
    prefetch();
  }

  function stopAudio(audio) {
    audio.pause();
    audio.removeAttribute("src");
    audio.load(); // ends its download
  }

  function best(question) {
    // The start of the segment where the tag scores highest (0 without segments).
    const data = question.segmentData;
    const k = data ? data.tags.indexOf(desk.tag) : -1;
    if (k < 0 || !data.segments.length) return 0;
    let top = data.segments[0];
    for (const segment of data.segments) if (segment.scores[k] > top.scores[k]) top = segment;
    return top.start_s;
  }

  function draw() {
    const question = desk.current;
    const box = desk.question;
    box.setAttribute("data-review-track", question ? question.track_id : "");
    if (!question) {
      box.replaceChildren(el("p", { class: "desk-done" }, desk.refilling || !desk.exhausted ? "loading…" : `Nothing left to review for “${desk.tag}”.`));
      return;
    }
    const audioUrl = "/api/tracks/" + encodeURIComponent(question.track_id) + "/audio";
    const audio = el("audio", { id: "review-player", controls: "", preload: "auto", src: audioUrl });
    question.audio = audio;
    question.started = false;
    const cue = () => { if (!question.started) audio.currentTime = best(question); };
    audio.addEventListener("loadedmetadata", cue);
    const says = question.score >= question.threshold ? "yes" : "no";
    let segments = null;
    if (question.segments) {
      segmentsOf(question);
      segments = heatmap(question.track_id, audio, question.duration_s, { tags: [desk.tag], data: question.segmentData || question.segmentPromise });
      if (!question.segmentData) question.segmentPromise.then(() => { if (audio.readyState >= 1) cue(); }, () => {});
    }
    box.replaceChildren(...[
      el("h1", { id: "title", class: "desk-question" }, "Is this track ", el("mark", {}, desk.tag), "?"),
      el("div", { class: "meta" },
        el("span", { class: "muted" }, "track"), el("span", {}, trackLink(question.track_id)),
        el("span", { class: "muted" }, "uri"), el("span", { class: "desk-uri" }, question.uri),
        el("span", { class: "muted" }, "run"), el("span", {}, `${question.run} (${question.model.name} ${question.model.version})`),
        el("span", { class: "muted" }, "score"),
        el("span", { class: "desk-score" }, `${question.score.toFixed(3)}, threshold ${question.threshold.toFixed(3)}: the model says ${says}`)),
      bar(question.score, question.threshold),
      question.previous ? el("p", { class: "desk-previous verdict-" + question.previous }, `you said ${question.previous}: answer again to correct it`) : null,
      audio,
      segments].filter((node) => node !== null));
  }

  function drawProgress() {
    const { decided, left, agree } = desk.counts;
    desk.progress.replaceChildren(
      el("span", { id: "review-counter" }, `${decided} decided, ${left} left`),
      el("span", { id: "review-agreement", class: "muted" },
        decided ? `agreement so far: ${agree} of ${decided} (${Math.round((100 * agree) / decided)}%)` : "agreement so far: none decided"));
  }

  function updatePending() {
    desk.root.dataset.pending = String(desk.writing);
  }

  function say(text, kind) {
    desk.status.className = kind === "error" ? "error" : "muted";
    desk.status.textContent = text;
  }

  function play() {
    const question = desk.current;
    if (!question) return;
    const audio = question.audio;
    if (!audio.paused) return audio.pause();
    // Cued at the best segment once its metadata loaded (or where a click on the heatmap put it).
    if (audio.readyState < 1) audio.currentTime = best(question);
    question.started = true;
    audio.play().catch((error) => say(`cannot play: ${error.message}`, "error"));
  }

  // ------------------------------------------------------------ keys

  function onKey(event) {
    if (!desk || !desk.root.isConnected || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest("input, select, textarea")) return; // typing
    const key = event.key === " " ? "space" : event.key.toLowerCase();
    const action = { y: () => answer("yes"), n: () => answer("no"), s: skip, u: undo, p: play, space: play, "?": toggleKeys }[key];
    if (!action) return;
    event.preventDefault(); // no page scroll on space, no native media key handling
    event.stopPropagation();
    if (event.repeat && key !== "space" && key !== "p") return; // a held key answers once
    action();
  }

  function toggleKeys() {
    desk.keys.hidden = !desk.keys.hidden;
  }

  window.addEventListener("keydown", onKey, true);
  window.addEventListener("hashchange", () => {
    if (desk && !location.hash.startsWith("#/review")) {
      if (desk.current && desk.current.audio) stopAudio(desk.current.audio);
      desk = null;
    }
  });

  // ------------------------------------------------------------ the page

  async function open(tag) {
    if (desk && desk.current && desk.current.audio) stopAudio(desk.current.audio);
    desk = null;
    const session = await window.curate.session();
    if (!session.labels) throw new Error("the review desk stores decisions: start tagscale explore with --labels DIR");
    if (!tag) throw new Error("no tag to review: open #/review?tag=NAME, or a tag's link on Browse");
    const page = await api("/api/review?" + new URLSearchParams({ tag, limit: BATCH }));
    const root = el("div", { id: "review-desk", class: "desk", "data-tag": tag, "data-pending": "0" });
    const state = {
      tag, root, queue: page.tracks.slice(), history: [], current: null, seen: new Set(page.tracks.map((t) => t.track_id)),
      skipped: new Set(), writing: 0, writes: Promise.resolve(), refilling: null, exhausted: page.tracks.length < BATCH,
      counts: { decided: page.decided, left: page.left, agree: page.agree },
      question: el("section", { id: "review-question", class: "desk-card" }),
      progress: el("p", { id: "review-progress", class: "desk-progress" }),
      status: el("p", { id: "review-status", class: "muted" }, "y yes · n no · s skip · u undo · space play · ? keys"),
      keys: el("table", { id: "review-keys", class: "desk-keys" }, KEYS.map(([key, text]) =>
        el("tr", {}, el("td", {}, el("kbd", {}, key)), el("td", {}, text.replace("{tag}", `“${tag}”`))))),
    };
    state.keys.hidden = true;
    root.append(
      el("p", { class: "muted" }, el("a", { href: "#/?" + new URLSearchParams({ tag }) }, `‹ tracks tagged “${tag}”`),
        " · one question at a time, closest to the threshold first"),
      state.progress, state.question, state.status, state.keys);
    desk = state;
    show(root);
    drawProgress();
    next();
  }

  return { open, keys: KEYS };
})();
