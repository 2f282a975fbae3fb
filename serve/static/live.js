// A stream's live view: the latest analysed frame with boxes and labels, as the ingest worker
// renders it while someone watches (about twice a second), and the people in view now.

import { ApiError, api } from "./api.js";
import { badge, drawJpeg, fill, fmtNumber, fmtTime, h, route, trackLabel } from "./dom.js";

export function livePage(view, main, settings, streamId) {
  const status = h("p", { id: "live-status", class: "status-line" });
  const people = h("ul", { id: "in-view", class: "people-list" });
  const canvas = h("canvas", { id: "preview", width: 640, height: 360, "data-frames": "0", "aria-label": `live preview of ${streamId}` });
  const note = h("p", { id: "preview-note", class: "muted" });
  const stage = settings.previews
    ? h("div", { class: "stage" }, canvas, note)
    : h("p", { id: "preview-off", class: "notice" },
        "Live previews are switched off on this service (ingest.previews: false in its configuration): no frame is rendered or kept. The people in view are listed below.");  // prettier-ignore
  fill(
    main,
    h("h1", {}, "Live: ", streamId),
    h("p", { class: "links" },
      h("a", { href: route("streams") }, "← Streams"), " · ",
      h("a", { href: route("streams", streamId, "people") }, "People"), " · ",
      h("a", { href: route("demographics", streamId) }, "Demographics")),  // prettier-ignore
    status,
    h("div", { class: "live" }, stage, h("section", { class: "side" }, h("h2", {}, "In view now"), people)),
  );

  let frames = 0;
  async function preview() {
    if (document.hidden) return;  // nobody looks: the worker stops rendering soon after
    try {
      const response = await api(`/v1/streams/${encodeURIComponent(streamId)}/preview.jpg`, { raw: true });
      const blob = await response.blob();
      if (!view.alive) return;
      await drawJpeg(canvas, blob);
      frames += 1;
      canvas.setAttribute("data-frames", String(frames));
      note.textContent = `${canvas.width}×${canvas.height}, refreshed about ${settings.preview_fps} times a second while you watch`;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 401) throw err;
      note.textContent = err.status === 503 ? "Waiting for a frame from the stream…" : err.message;
    }
  }

  async function details() {
    const id = encodeURIComponent(streamId);
    const [stream, active] = await Promise.all([api(`/v1/streams/${id}`), api(`/v1/streams/${id}/tracks?state=active`)]);
    if (!view.alive) return;
    const st = stream.status || {};
    fill(status, badge(st.state), ` ${fmtNumber(st.fps)} fps · ${st.tracks_active ?? 0} in view · ${st.frames_dropped ?? 0} dropped · ${st.reconnects ?? 0} reconnects`,
      st.last_error ? ` · last error: ${st.last_error}` : "", ` · estimators: ${st.estimators || "–"}`);  // prettier-ignore
    fill(
      people,
      active.length
        ? active.slice().reverse().map((t) =>
            h("li", { "data-track": t.track }, h("a", { href: route("tracks", t.track) }, trackLabel(t)), h("span", { class: "muted" }, ` since ${fmtTime(t.first_seen)}`)))
        : h("li", { class: "muted" }, "Nobody right now."),
    );
  }

  if (settings.previews) view.loop(() => 1000 / settings.preview_fps, preview);
  view.loop(2000, details);
}
