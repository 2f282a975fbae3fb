// Demographics: people per time bucket by gender, age band and expression, as stacked bars.

import { api } from "./api.js";
import { stackedBars } from "./charts.js";
import { fill, fmtTime, h, route } from "./dom.js";

const GENDER = { female: "#db2777", male: "#2563eb", unknown: "#9ca3af" };
const AGE = { "0-17": "#fde68a", "18-29": "#fbbf24", "30-44": "#f97316", "45-59": "#dc2626", "60+": "#7f1d1d", unknown: "#9ca3af" };
const EXPRESSION = {
  neutral: "#64748b", happy: "#16a34a", sad: "#2563eb", surprise: "#eab308",
  fear: "#7c3aed", disgust: "#a16207", anger: "#dc2626", unknown: "#d1d5db",
};  // prettier-ignore
const PERIODS = { "15m": [["3 hours", 3], ["12 hours", 12]], "1h": [["24 hours", 24], ["3 days", 72], ["7 days", 168]], "1d": [["30 days", 720], ["90 days", 2160]] };

export function demographicsPage(view, main, settings, streamId) {
  const streamSelect = h("select", { id: "stats-stream", onchange: () => { location.hash = route("demographics", streamSelect.value); } });
  const bucket = h("select", { id: "stats-bucket", onchange: () => { setPeriods(); view.refresh(); } }, settings.buckets.map((b) => h("option", { value: b, selected: b === "15m" }, b)));
  const period = h("select", { id: "stats-period", onchange: () => view.refresh() });
  const total = h("p", { id: "stats-total" });
  const charts = h("div", { id: "stats-charts", class: "charts" });
  fill(
    main,
    h("h1", {}, "Demographics"),
    h("form", { class: "inline-form", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Stream ", streamSelect), h("label", {}, "Bucket ", bucket), h("label", {}, "Last ", period)),  // prettier-ignore
    h("p", { class: "muted hint" }, "People counted once each, in the bucket where they were first seen, with their labels as finally fused (active tracks with their labels so far); labels not known yet are counted as unknown."),
    total,
    charts,
  );

  function setPeriods() {
    fill(period, (PERIODS[bucket.value] || [["12 buckets", 12]]).map(([label, hours]) => h("option", { value: hours }, label)));
  }
  setPeriods();

  async function loadStreams() {
    const streams = await api("/v1/streams");
    const ids = streams.map((st) => st.id);
    if (streamId && !ids.includes(streamId)) ids.unshift(streamId);
    fill(streamSelect, ids.length ? ids.map((id) => h("option", { value: id, selected: id === streamId }, id)) : h("option", { value: "" }, "no streams"));
    if (!streamId && ids.length) streamId = ids[0];
  }

  async function refresh() {
    if (!streamId) {
      await loadStreams();
      if (!streamId) {
        fill(charts, h("p", { class: "muted" }, "Add a stream first."));
        return;
      }
    }
    const to = Date.now() / 1000;
    const from = to - Number(period.value) * 3600;
    const stats = await api(`/v1/streams/${encodeURIComponent(streamId)}/stats?bucket=${bucket.value}&from=${from.toFixed(0)}&to=${to.toFixed(0)}`);
    if (!view.alive) return;
    total.textContent = `${stats.total.people} people from ${fmtTime(stats.from, true)} to ${fmtTime(stats.to, true)}, per ${stats.bucket}`;
    fill(
      charts,
      stackedBars("By gender", stats.buckets, "gender", Object.keys(GENDER), GENDER, stats.bucket_s),
      stackedBars("By age band", stats.buckets, "age", Object.keys(AGE), AGE, stats.bucket_s),
      stackedBars("By expression", stats.buckets, "expression", Object.keys(EXPRESSION), EXPRESSION, stats.bucket_s),
    );
  }

  loadStreams().catch((err) => view.error(err.message));
  view.loop(10000, refresh);
}
