// The JSON API, read with the key the operator gave once (kept for this browser tab's
// session in sessionStorage, sent as `Authorization: Bearer`; never put in a URL).

const KEY = "orchestrion.console.key";
const root = () => new URL("../", document.baseURI); // where /v1 lives (the app's root)

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set key(value) {
    sessionStorage.setItem(KEY, value);
  },
  forget() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

/** The URL of an API path ("/v1/runs" or a `next` URL the API gave), with parameters. */
export function apiUrl(path, params = {}) {
  const url = new URL(path.replace(/^\//, ""), root());
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${session.key ?? ""}`, ...extra };
}

/** A key that stopped working (or none): the console asks for one again. */
function unauthorized() {
  session.forget();
  window.dispatchEvent(new CustomEvent("console:unauthorized"));
}

async function request(method, path, { params, signal, key } = {}) {
  const headers = key
    ? { Authorization: `Bearer ${key}`, Accept: "application/json" }
    : authHeaders({ Accept: "application/json" });
  const response = await fetch(apiUrl(path, params), {
    method,
    headers,
    signal,
    cache: "no-store",
    credentials: "omit",
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && !key) unauthorized();
    const error = body?.error ?? {};
    throw new ApiError(
      response.status,
      error.type ?? "http_error",
      error.message ?? `${response.status} ${response.statusText}`,
    );
  }
  return body;
}

export const getJSON = (path, options) => request("GET", path, options);
export const postJSON = (path, options) => request("POST", path, options);

/** Whether a key is accepted, and what it may read (GET /v1/whoami). */
export const whoami = (key) => request("GET", "/v1/whoami", { key });

export { unauthorized };
