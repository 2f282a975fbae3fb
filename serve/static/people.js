// People: a stream's active and recently ended tracks; a track's detail with its estimates
// over time by source, and its face crop when the service keeps them.

import { ApiError, api } from "./api.js";
import { timeChart } from "./charts.js";
import { badge, drawJpeg, fill, fmtAge, fmtDistribution, fmtExpression, fmtGender, fmtNumber, fmtSources, fmtTime, h, route, trackNumber } from "./dom.js";

const SOURCE_COLORS = { mllm: "#7c3aed", specialist: "#0e9f6e" };
const RECENT = 100;

/** The tracks table (also used by a job's page). */
export function tracksTable(tracks, id = "people") {
  const head = ["Track", "State", "First seen", "Last seen", "Frames", "Age", "Gender", "Expression", "Estimates"];
  return h(
    "table",
    { id, class: "data" },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      tracks.map((t) =>
        h(
          "tr",
          { "data-track": t.track },
          h("td", {}, h("a", { href: route("tracks", t.track) }, `#${trackNumber(t.track)}`)),
          h("td", {}, badge(t.state)),
          h("td", {}, fmtTime(t.first_seen)),
          h("td", {}, fmtTime(t.last_seen)),
          h("td", { class: "num" }, String(t.frames)),
          h("td", { class: "age" }, fmtAge(t.age)),
          h("td", { class: "gender" }, fmtGender(t.gender)),
          h("td", { class: "expression", title: fmtDistribution(t.expression) || undefined }, fmtExpression(t.expression)),
          h("td", { class: "sources" }, fmtSources(t.sources)),
        ),
      ),
    ),
  );
}

export function peoplePage(view, main, settings, streamId) {
  const holder = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  fill(
    main,
    h("h1", {}, "People: ", streamId),
    h("p", { class: "links" }, h("a", { href: route("streams") }, "← Streams"), " · ", h("a", { href: route("streams", streamId) }, "Live view")),
    h("p", { class: "muted hint" }, `Active tracks and the ${RECENT} most recent ones; labels stay empty until there is enough evidence.`),
    holder,
  );

  async function refresh() {
    const id = encodeURIComponent(streamId);
    const [active, recent] = await Promise.all([api(`/v1/streams/${id}/tracks?state=active`), api(`/v1/streams/${id}/tracks?limit=${RECENT}`)]);
    if (!view.alive) return;
    const byKey = new Map();
    for (const t of [...recent, ...active]) byKey.set(t.track, t);
    const tracks = [...byKey.values()].sort((a, b) => (a.state === b.state ? b.last_seen - a.last_seen : a.state === "active" ? -1 : 1));
    fill(holder, tracks.length ? tracksTable(tracks) : h("p", { class: "muted" }, "Nobody seen yet."));
  }

  view.loop(2000, refresh);
}

export function trackPage(view, main, settings, key) {
  const summary = h("dl", { id: "track-summary", class: "facts" });
  const charts = h("div", { id: "track-charts", class: "charts" });
  const estimates = h("div");
  const face = settings.face_crops
    ? h("canvas", { id: "face", width: 1, height: 1, class: "face", "aria-label": "face crop" })
    : h("p", { class: "muted" }, "Face crops are not stored on this service (ingest.store_face_crops: false).");
  const faceNote = h("p", { class: "muted" });
  const stream = key.split(":")[0];
  fill(
    main,
    h("h1", {}, "Track ", key),
    h("p", { class: "links" }, h("a", { href: route("streams", stream, "people") }, `← People of ${stream}`)),
    h("div", { class: "track" }, summary, h("div", { class: "face-box" }, face, faceNote)),
    h("h2", {}, "How its estimates arrived"),
    charts,
    estimates,
  );

  let faceShown = false;
  async function loadFace() {
    try {
      const response = await api(`/v1/tracks/${encodeURIComponent(key)}/face.jpg`, { raw: true });
      await drawJpeg(face, await response.blob());
      faceShown = true;
      faceNote.textContent = "Its best face crop.";
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 401) throw err;
      faceNote.textContent = err.message;
    }
  }

  async function refresh() {
    const id = encodeURIComponent(key);
    const [track, points] = await Promise.all([api(`/v1/tracks/${id}`), api(`/v1/tracks/${id}/estimates`)]);
    if (!view.alive) return;
    fill(
      summary,
      [
        ["State", badge(track.state)],
        ["Seen", `${fmtTime(track.first_seen, true)} – ${fmtTime(track.last_seen)}`],
        ["Frames", String(track.frames)],
        ["Age", `${fmtAge(track.age)} (${track.age.n} estimates)`],
        ["Gender", `${fmtGender(track.gender)} (${track.gender.n} estimates)`],
        ["Expression", `${fmtExpression(track.expression)} (${track.expression.n} estimates)`],
        ["Expression distribution", fmtDistribution(track.expression) || "–"],
        ["Estimates by source", fmtSources(track.sources)],
      ].map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]),
    );
    const valid = points.filter((p) => p.valid);
    const sources = [...new Set(points.map((p) => p.source))].sort();
    const series = (field) =>
      sources.map((name) => ({
        name,
        color: SOURCE_COLORS[name] || "#6b7280",
        points: valid.filter((p) => p.source === name && p[field] !== null).map((p) => [p.time, p[field]]),
      }));
    fill(
      charts,
      timeChart("Age estimates (years) by source", series("age")),
      timeChart("p(female) by source", series("p_female"), { yMin: 0, yMax: 1, yFormat: (v) => v.toFixed(2) }),
    );
    fill(
      estimates,
      h(
        "table",
        { id: "estimates", class: "data" },
        h("thead", {}, h("tr", {}, ["Time", "Source", "Model", "Age", "p(female)", "Expression", ""].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          points.slice().reverse().map((p) =>
            h(
              "tr",
              { "data-source": p.source },
              h("td", {}, fmtTime(p.time)),
              h("td", {}, p.source),
              h("td", { class: "model" }, p.model),
              h("td", { class: "num" }, p.age === null ? "–" : p.age_std === null ? fmtNumber(p.age) : `${fmtNumber(p.age)} ± ${fmtNumber(p.age_std)}`),
              h("td", { class: "num" }, fmtNumber(p.p_female, 2)),
              h("td", {}, p.expression ? `${p.expression} (${fmtNumber(p.expression_p, 2)})` : "–"),
              h("td", { class: "muted" }, p.valid ? "" : `not used: ${p.reason || "invalid"}`),
            ),
          ),
        ),
      ),
    );
    if (settings.face_crops && !faceShown) await loadFace();
    if (track.state === "ended") view.stop();  // an ended track no longer changes
  }

  view.loop(3000, refresh);
}
