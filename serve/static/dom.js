// Building the page: every value is inserted as text (text nodes, textContent, attributes),
// never parsed as HTML. Links only ever point inside the console.

const PROPERTIES = new Set(["value", "checked", "disabled", "type", "required", "hidden", "max", "min", "selected", "open"]);

/** An HTML element: h("td", {class: "state"}, "live"); strings become text nodes. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element, the same way. */
export function s(tag, props = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  setProps(el, props);
  append(el, children);
  return el;
}

function setProps(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.setAttribute("class", value);
    else if (name === "text") el.textContent = String(value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name)) el[name] = value;
    else if (name === "href") el.setAttribute("href", internal(value));
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function internal(href) {
  if (!/^#\//.test(href)) throw new Error("console links stay inside the console");
  return href;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A hash route with its parts encoded: route("streams", id, "people"). */
export function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(p)).join("/");
}

// -- formatting ---------------------------------------------------------------------------

/** Stream times: Unix seconds on live streams (shown as local time), seconds of video in files. */
export function fmtTime(t, withDate = false) {
  if (t === null || t === undefined) return "–";
  if (t > 1e9) {
    const d = new Date(t * 1000);
    return withDate ? d.toLocaleString() : d.toLocaleTimeString();
  }
  return `${t.toFixed(1)} s`;
}

export function fmtNumber(x, digits = 1) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

export function fmtAge(age) {
  if (!age || age.mean === null || age.mean === undefined) return "–";
  return age.std === null || age.std === undefined ? `${Math.round(age.mean)}` : `${Math.round(age.mean)} ± ${Math.round(age.std)}`;
}

export function fmtGender(gender) {
  if (!gender || gender.p_female === null || gender.p_female === undefined) return "–";
  const p = gender.label === "male" ? 1 - gender.p_female : gender.p_female;
  return gender.label ? `${gender.label} (${p.toFixed(2)})` : `undecided (p female ${gender.p_female.toFixed(2)})`;
}

export function fmtExpression(expression) {
  if (!expression || !expression.probs) return "–";
  const [top, p] = Object.entries(expression.probs).sort((a, b) => b[1] - a[1])[0];
  return expression.label ? `${expression.label} (${p.toFixed(2)})` : `undecided (${top} ${p.toFixed(2)})`;
}

/** The whole expression distribution, most likely first: "happy 0.70 · neutral 0.20 · …". */
export function fmtDistribution(expression) {
  if (!expression || !expression.probs) return "";
  return Object.entries(expression.probs).sort((a, b) => b[1] - a[1]).map(([name, p]) => `${name} ${p.toFixed(2)}`).join(" · ");
}

export function fmtSources(sources) {
  const parts = Object.entries(sources || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  return parts.length ? parts.map(([name, n]) => `${name} ${n}`).join(", ") : "none yet";
}

export function trackNumber(key) {
  return key.split(":").pop();
}

/** The label the preview draws: "#12 F 32y happy (specialist)". */
export function trackLabel(track) {
  const parts = [`#${trackNumber(track.track)}`];
  if (track.gender && track.gender.label) parts.push(track.gender.label === "female" ? "F" : "M");
  if (track.age && track.age.mean !== null && track.age.mean !== undefined) parts.push(`${Math.round(track.age.mean)}y`);
  if (track.expression && track.expression.label) parts.push(track.expression.label);
  const sources = Object.entries(track.sources || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (sources.length) parts.push(`(${sources.map(([name]) => name).join("+")})`);
  return parts.join(" ");
}

const STATES = new Set(["pending", "connecting", "live", "reconnecting", "running", "done", "failed", "stopped", "cancelled", "active", "ended"]);

/** A state badge; the class comes from a fixed set, whatever the API says. */
export function badge(state) {
  return h("span", { class: `badge ${STATES.has(state) ? "state-" + state : "state-other"}` }, state || "–");
}

/** Draw a JPEG (a Blob) on a canvas, at the image's own size (CSS scales it down). */
export async function drawJpeg(canvas, blob) {
  const bitmap = await createImageBitmap(blob);
  try {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
  } finally {
    bitmap.close();
  }
}
