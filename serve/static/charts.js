// Small SVG charts, drawn by hand (no library): stacked bars per time bucket, and values over
// time per source. Labels and tooltips are text nodes.

import { h, s } from "./dom.js";

const W = 720;
const H = 220;
const M = { left: 40, right: 10, top: 10, bottom: 30 };

function niceMax(value) {
  if (value <= 5) return Math.max(1, Math.ceil(value));
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
}

function legend(categories, colors) {
  return h(
    "ul",
    { class: "legend" },
    categories.map((name) =>
      h("li", {}, s("svg", { width: 12, height: 12, "aria-hidden": "true" }, s("rect", { width: 12, height: 12, rx: 2, fill: colors[name] })), name),
    ),
  );
}

function tickLabel(t, bucketS) {
  const d = new Date(t * 1000);
  if (t < 1e9) return `${t} s`;
  if (!bucketS) return d.toLocaleTimeString();  // points in time, often seconds apart
  if (bucketS >= 86400) return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/**
 * Stacked bars: one bar per bucket, one segment per category of `dimension`
 * (buckets as the stats endpoint gives them).
 */
export function stackedBars(title, buckets, dimension, categories, colors, bucketS) {
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const top = niceMax(Math.max(0, ...buckets.map((b) => b.people)));
  const slot = plotW / Math.max(1, buckets.length);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title, "data-dimension": dimension });
  for (const fraction of [0, 0.5, 1]) {
    if (!Number.isInteger(top * fraction)) continue;  // people are whole
    const y = M.top + plotH * (1 - fraction);
    svg.append(s("line", { x1: M.left, x2: W - M.right, y1: y, y2: y, class: "grid" }));
    svg.append(s("text", { x: M.left - 6, y: y + 4, class: "axis", "text-anchor": "end" }, String(top * fraction)));
  }
  const every = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((bucket, i) => {
    const x = M.left + i * slot + slot * 0.1;
    let y = M.top + plotH;
    for (const name of categories) {
      const n = bucket[dimension][name] || 0;
      if (!n) continue;
      const height = (n / top) * plotH;
      y -= height;
      svg.append(
        s("rect", { x, y, width: Math.max(1, slot * 0.8), height, fill: colors[name], "data-category": name, "data-count": n },
          s("title", {}, `${tickLabel(bucket.start, bucketS)} · ${name}: ${n}`)),
      );
    }
    if (i % every === 0) {
      svg.append(s("text", { x: x + slot * 0.4, y: H - 10, class: "axis", "text-anchor": "middle" }, tickLabel(bucket.start, bucketS)));
    }
  });
  return h("figure", { class: "chart-box" }, h("figcaption", {}, title), svg, legend(categories, colors));
}

/**
 * Values over time, one series per source: [{name, color, points: [[t, value], ...]}].
 */
export function timeChart(title, series, { yMin = 0, yMax = null, yFormat = (v) => String(Math.round(v)) } = {}) {
  const points = series.flatMap((serie) => serie.points);
  const figure = h("figure", { class: "chart-box" }, h("figcaption", {}, title));
  if (!points.length) {
    figure.append(h("p", { class: "muted" }, "No estimates yet."));
    return figure;
  }
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const ts = points.map((p) => p[0]);
  const t0 = Math.min(...ts);
  const t1 = Math.max(...ts);
  const span = t1 > t0 ? t1 - t0 : 1;
  const top = yMax === null ? niceMax(Math.max(...points.map((p) => p[1]))) : yMax;
  const X = (t) => M.left + ((t - t0) / span) * plotW;
  const Y = (v) => M.top + plotH * (1 - (v - yMin) / (top - yMin || 1));
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title });
  for (const fraction of [0, 0.5, 1]) {
    const value = yMin + (top - yMin) * fraction;
    svg.append(s("line", { x1: M.left, x2: W - M.right, y1: Y(value), y2: Y(value), class: "grid" }));
    svg.append(s("text", { x: M.left - 6, y: Y(value) + 4, class: "axis", "text-anchor": "end" }, yFormat(value)));
  }
  svg.append(s("text", { x: M.left, y: H - 10, class: "axis" }, tickLabel(Math.round(t0), 0)));
  svg.append(s("text", { x: W - M.right, y: H - 10, class: "axis", "text-anchor": "end" }, tickLabel(Math.round(t1), 0)));
  for (const serie of series) {
    if (!serie.points.length) continue;
    const path = serie.points.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    svg.append(s("polyline", { points: path, fill: "none", stroke: serie.color, "stroke-width": 1.5 }));
    for (const [t, v] of serie.points) {
      svg.append(s("circle", { cx: X(t), cy: Y(v), r: 3.5, fill: serie.color, "data-source": serie.name }, s("title", {}, `${serie.name}: ${yFormat(v)}`)));
    }
  }
  const colors = Object.fromEntries(series.map((serie) => [serie.name, serie.color]));
  figure.append(svg, legend(series.map((serie) => serie.name), colors));
  return figure;
}
