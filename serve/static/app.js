// The console: asks for the API key when the service has one, then routes between pages.
// Each page is a "view" whose polling stops when another page is opened.

import { ApiError, api, clearKey, getKey, health, onUnauthorized, setKey } from "./api.js";
import { demographicsPage } from "./demographics.js";
import { fill, h } from "./dom.js";
import { jobPage, jobsPage } from "./jobs.js";
import { livePage } from "./live.js";
import { peoplePage, trackPage } from "./people.js";
import { streamsPage } from "./streams.js";

const main = document.getElementById("main");
const banner = document.getElementById("page-error");
const forget = document.getElementById("forget-key");
let settings = null;
let needsKey = false;
let current = null;

class View {
  constructor() {
    this.alive = true;
    this.stopped = false;
    this.loops = [];
  }

  /** Run `task` now and again `ms` after each run ends (a number, or a function giving it). */
  loop(ms, task) {
    const state = { timer: null, running: false, again: false };
    const run = async () => {
      if (!this.alive || this.stopped) return;
      state.running = true;
      try {
        await task();
        if (this.alive) this.error(null);
      } catch (err) {
        if (this.alive && !(err instanceof ApiError && err.status === 401)) this.error(err.message);
      }
      state.running = false;
      if (!this.alive || this.stopped) return;
      const delay = state.again ? 0 : typeof ms === "function" ? ms() : ms;
      state.again = false;
      state.timer = setTimeout(run, delay);
    };
    state.run = run;
    this.loops.push(state);
    run();
  }

  /** Run every loop now (a control changed); one still running runs again when it ends. */
  refresh() {
    for (const state of this.loops) {
      if (state.running) {
        state.again = true;
      } else {
        clearTimeout(state.timer);
        state.run();
      }
    }
  }

  /** No more polling (what is shown no longer changes). */
  stop() {
    this.stopped = true;
  }

  error(message) {
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  dispose() {
    this.alive = false;
    for (const state of this.loops) clearTimeout(state.timer);
  }
}

function newView() {
  if (current) current.dispose();
  current = new View();
  current.error(null);
  return current;
}

const ROUTES = [
  [/^streams$/, (view) => streamsPage(view, main, settings), "streams"],
  [/^streams\/([^/]+)$/, (view, id) => livePage(view, main, settings, id), "streams"],
  [/^streams\/([^/]+)\/people$/, (view, id) => peoplePage(view, main, settings, id), "streams"],
  [/^tracks\/([^/]+)$/, (view, key) => trackPage(view, main, settings, key), "streams"],
  [/^demographics$/, (view) => demographicsPage(view, main, settings, null), "demographics"],
  [/^demographics\/([^/]+)$/, (view, id) => demographicsPage(view, main, settings, id), "demographics"],
  [/^jobs$/, (view) => jobsPage(view, main, settings), "jobs"],
  [/^jobs\/([^/]+)$/, (view, id) => jobPage(view, main, settings, id), "jobs"],
];

function show() {
  if (!settings) return;
  const path = location.hash.replace(/^#\/?/, "") || "streams";
  const view = newView();
  for (const [pattern, page, section] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      let args;
      try {
        args = match.slice(1).map(decodeURIComponent);
      } catch (err) {
        break;
      }
      for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("current", link.dataset.section === section);
      page(view, ...args);
      return;
    }
  }
  fill(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/streams" }, "Go to the streams.")));
}

/** The key prompt: asked once per tab; the key stays in this tab's sessionStorage only. */
function askForKey(message) {
  newView();
  settings = null;
  forget.hidden = true;
  const input = h("input", { id: "key-input", type: "password", required: true, autocomplete: "off", spellcheck: "false" });
  const error = h("p", { id: "key-error", class: "error", role: "alert" }, message || "");
  const submit = h("button", { type: "submit" }, "Use key");
  fill(
    main,
    h(
      "form",
      { id: "key-form", class: "card", onsubmit: (e) => useKey(e, input, error, submit) },
      h("h1", {}, "API key"),
      h("p", {}, "This service needs its API key (TRACKLENS_API_KEY or api.api_key_file where it runs). It is kept in this browser tab only and sent as a bearer header."),
      h("label", {}, "Key ", input),
      submit,
      error,
    ),
  );
  input.focus();
}

async function useKey(event, input, error, submit) {
  event.preventDefault();
  submit.disabled = true;
  setKey(input.value.trim());
  try {
    await start();
  } catch (err) {
    clearKey();
    error.textContent = err.status === 401 ? `That key was refused: ${err.message}` : err.message;
  } finally {
    submit.disabled = false;
  }
}

async function start() {
  settings = await api("/v1/console", { quiet401: true });
  forget.hidden = !needsKey;
  show();
}

async function boot() {
  onUnauthorized((message) => {
    clearKey();
    askForKey(`The service refused the key: ${message}`);
  });
  forget.addEventListener("click", () => {
    clearKey();
    askForKey("");
  });
  window.addEventListener("hashchange", show);
  let info;
  try {
    info = await health();
  } catch (err) {
    fill(main, h("h1", {}, "The service is not ready"), h("p", { class: "error" }, err.message), h("p", {}, "Reload the page to try again."));
    return;
  }
  needsKey = Boolean(info.auth);
  document.getElementById("service").textContent = `estimators: ${info.estimators || "–"}`;
  if (needsKey && !getKey()) {
    askForKey("");
    return;
  }
  try {
    await start();
  } catch (err) {
    if (err.status === 401) askForKey(`The service refused the key: ${err.message}`);
    else fill(main, h("h1", {}, "The service is not ready"), h("p", { class: "error" }, err.message));
  }
}

boot();
