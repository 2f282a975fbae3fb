// Calls to the tracklens API. The key, when the service has one, lives in this tab's
// sessionStorage only and travels as a bearer header: never in a URL, never in storage that
// outlives the tab.

const KEY = "tracklens.key";

export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

let unauthorized = () => {};

/** Called with the API's message when a request is refused for its key (401). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/**
 * One API call. Resolves to the decoded JSON (null for 204), or to the Response itself with
 * `raw` (images, downloads). Rejects with an ApiError carrying the API's own message.
 */
export async function api(path, { method = "GET", body, raw = false, quiet401 = false } = {}) {
  const headers = { Accept: raw ? "*/*" : "application/json" };
  const key = getKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch (err) {
    throw new ApiError(0, "the service does not answer; is tracklens serve running?");
  }
  if (!response.ok) {
    const error = new ApiError(response.status, await errorMessage(response), response.headers.get("Retry-After"));
    if (response.status === 401 && !quiet401) unauthorized(error.message);
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

async function errorMessage(response) {
  try {
    const data = await response.json();
    if (data && typeof data.error === "string") return data.error;
  } catch (err) {
    // not JSON: the status line says enough
  }
  return `${response.status} ${response.statusText}`.trim();
}

/** GET /healthz: open, says whether the service wants a key. */
export async function health() {
  const response = await fetch("/healthz", { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response.json();
}
