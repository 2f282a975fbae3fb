// Jobs: analyse a video file inside the service's file roots; progress, results, tracks.jsonl.

import { api } from "./api.js";
import { badge, fill, h, route } from "./dom.js";
import { tracksTable } from "./people.js";

const RUNNING = new Set(["pending", "running"]);

function progress(job) {
  const value = job.state === "done" ? 1 : job.progress;
  const bar = h("progress", { max: 1, "aria-label": `progress of ${job.id}` });
  if (value !== null && value !== undefined) bar.value = value;  // no value: an indeterminate bar
  const frames = job.frames_expected ? `${job.frames_analysed}/${job.frames_expected} frames` : `${job.frames_analysed} frames`;
  return h("span", { class: "progress" }, bar, " ", frames);
}

async function download(job) {
  const response = await api(`/v1/jobs/${encodeURIComponent(job.id)}/tracks.jsonl`, { raw: true });
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { download: `${job.id}-tracks.jsonl`, hidden: true });
  link.setAttribute("href", url);  // a blob: URL of this page's own data (h() takes console routes only)
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function actions(view, job, refresh) {
  const cancel = async () => {
    try {
      await api(`/v1/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
    } catch (err) {
      view.error(err.message);
    }
    await refresh();
  };
  const fetchFile = () => download(job).catch((err) => view.error(err.message));
  return [
    RUNNING.has(job.state) ? h("button", { type: "button", class: "danger", onclick: cancel }, "Cancel") : null,
    job.result && job.result.tracks ? h("button", { type: "button", class: "download", onclick: fetchFile }, "tracks.jsonl") : null,
  ];
}

export function jobsPage(view, main, settings) {
  const rows = h("tbody");
  const error = h("p", { id: "job-error", class: "error", role: "alert" });
  const roots = settings.file_roots;
  const path = h("input", { id: "job-path", type: "text", required: true, placeholder: roots.length ? `${roots[0]}/video.mp4` : "/path/to/video.mp4", autocomplete: "off", spellcheck: "false" });
  const submit = h("button", { type: "submit" }, "Analyse");
  fill(
    main,
    h("h1", {}, "Jobs"),
    h("form", { id: "add-job", class: "inline-form", onsubmit: (e) => add(e) }, h("label", {}, "Video file ", path), submit),
    error,
    h("p", { class: "muted hint" }, roots.length ? `Files inside: ${roots.join(", ")} (api.file_roots).` : "No folders are open to jobs on this service (api.file_roots is empty): every path is refused."),
    h("table", { id: "jobs", class: "data" },
      h("thead", {}, h("tr", {}, ["Job", "File", "State", "Progress", "Tracks", "Seconds", ""].map((c) => h("th", {}, c)))), rows),  // prettier-ignore
  );

  async function add(event) {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      await api("/v1/jobs", { method: "POST", body: { path: path.value.trim() } });
      path.value = "";
      await refresh();
    } catch (err) {
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  }

  async function refresh() {
    const jobs = await api("/v1/jobs");
    if (!view.alive) return;
    fill(
      rows,
      jobs.length
        ? jobs.slice().reverse().map((job) =>
            h("tr", { "data-job": job.id },
              h("td", {}, h("a", { href: route("jobs", job.id) }, job.id)),
              h("td", { class: "path" }, job.path),
              h("td", { class: "state" }, badge(job.state), job.status && job.status.last_error ? h("span", { class: "error" }, ` ${job.status.last_error}`) : null),
              h("td", {}, progress(job)),
              h("td", { class: "num tracks" }, job.result ? String(job.result.tracks) : "–"),
              h("td", { class: "num" }, job.result ? String(job.result.seconds) : "–"),
              h("td", { class: "actions" }, actions(view, job, refresh))))  // prettier-ignore
        : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No jobs on record.")),
    );
  }

  view.loop(1500, refresh);
}

export function jobPage(view, main, settings, jobId) {
  const head = h("div", { id: "job-status" });
  const result = h("div", { id: "job-result" });
  fill(main, h("h1", {}, "Job ", jobId), h("p", { class: "links" }, h("a", { href: route("jobs") }, "← Jobs")), head, h("h2", {}, "Tracks"), result);

  async function refresh() {
    const id = encodeURIComponent(jobId);
    const job = await api(`/v1/jobs/${id}`);
    const tracks = await api(`/v1/streams/${id}/tracks`).catch(() => []);
    if (!view.alive) return;
    fill(
      head,
      h("p", { class: "path" }, job.path),
      h("p", {}, badge(job.state), " ", progress(job), " ", actions(view, job, refresh)),
      job.result && job.result.error ? h("p", { class: "error" }, job.result.error) : null,
    );
    fill(result, tracks.length ? tracksTable(tracks, "job-tracks") : h("p", { class: "muted" }, "No tracks yet."));
    if (job.result) view.stop();
  }

  view.loop(1500, refresh);
}
