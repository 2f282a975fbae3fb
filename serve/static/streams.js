// Streams: every stream with its state, add one, delete one; refreshed every 2 s.

import { api } from "./api.js";
import { badge, fill, fmtNumber, h, route } from "./dom.js";

export function streamsPage(view, main, settings) {
  const rows = h("tbody");
  const error = h("p", { id: "add-error", class: "error", role: "alert" });
  const url = h("input", { id: "stream-url", name: "url", type: "text", required: true, placeholder: "rtsp://user:password@camera:554/stream1", autocomplete: "off", spellcheck: "false" });
  const name = h("input", { id: "stream-name", name: "name", type: "text", placeholder: "door (optional)", autocomplete: "off", spellcheck: "false" });
  const check = h("input", { id: "stream-check", name: "check", type: "checkbox", checked: true });
  const submit = h("button", { type: "submit" }, "Add stream");
  const form = h(
    "form",
    { id: "add-stream", class: "inline-form", onsubmit: (event) => add(event) },
    h("label", {}, "URL ", url),
    h("label", {}, "Name ", name),
    h("label", { class: "check" }, check, " check that the camera answers"),
    submit,
  );
  const empty = h("p", { class: "muted", hidden: true }, "No streams yet: add one above.");
  fill(
    main,
    h("h1", {}, "Streams"),
    form,
    error,
    h("p", { class: "muted hint" }, `URL schemes: ${settings.schemes.join(", ")}. Credentials in the URL are kept for the camera and never shown back.`),
    h(
      "table",
      { id: "streams", class: "data" },
      h("thead", {}, h("tr", {}, ["Stream", "URL", "State", "fps", "Dropped", "Reconnects", "People in view", "Last error", ""].map((c) => h("th", {}, c)))),
      rows,
    ),
    empty,
  );

  async function add(event) {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    const body = { url: url.value.trim(), options: { check: check.checked } };
    if (name.value.trim()) body.name = name.value.trim();
    try {
      await api("/v1/streams", { method: "POST", body });
      url.value = "";
      name.value = "";
      await refresh();
    } catch (err) {
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  }

  async function remove(id) {
    if (!window.confirm(`Delete the stream ${id}? Its tracks are ended and kept for their retention.`)) return;
    try {
      await api(`/v1/streams/${encodeURIComponent(id)}`, { method: "DELETE" });
    } catch (err) {
      view.error(err.message);
    }
    await refresh();
  }

  function row(stream) {
    const status = stream.status || {};
    return h(
      "tr",
      { "data-stream": stream.id },
      h("td", {}, h("a", { href: route("streams", stream.id) }, stream.id)),
      h("td", { class: "url" }, stream.url),
      h("td", { class: "state" }, badge(status.state)),
      h("td", { class: "fps num" }, fmtNumber(status.fps)),
      h("td", { class: "num" }, String(status.frames_dropped ?? 0)),
      h("td", { class: "num" }, String(status.reconnects ?? 0)),
      h("td", { class: "people num" }, String(status.tracks_active ?? 0)),
      h("td", { class: "last-error" }, status.last_error || ""),
      h(
        "td",
        { class: "actions" },
        h("a", { href: route("streams", stream.id) }, "Live"),
        h("a", { href: route("streams", stream.id, "people") }, "People"),
        h("a", { href: route("demographics", stream.id) }, "Demographics"),
        h("button", { type: "button", class: "danger delete", onclick: () => remove(stream.id) }, "Delete"),
      ),
    );
  }

  async function refresh() {
    const streams = await api("/v1/streams");
    if (!view.alive) return;
    fill(rows, streams.map(row));
    empty.hidden = streams.length > 0;
  }

  view.loop(2000, refresh);
}
