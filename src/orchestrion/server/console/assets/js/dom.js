// Building the page. Data only ever enters the document as text (Node.textContent,
// append(string)) or as attribute values: never as markup. A model that answers
// "<script>" shows those characters.

/** An element: h("a", {href: "...", class: "x"}, "text", otherNode, [more]). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

/** A link to a page of the console (ids are encoded, so an id is never a URL). */
export function pageHref(kind, id, query) {
  const path = kind === "runs" && id === undefined ? "./" : `${kind}/${encodeURIComponent(id)}`;
  return query ? `${path}?${new URLSearchParams(query)}` : path;
}

export function pageLink(kind, id, text, attrs = {}) {
  return h("a", { ...attrs, href: pageHref(kind, id) }, text ?? id);
}

/** A class name made from data (statuses, kinds): letters, digits, - and _ only. */
export function token(value) {
  return String(value ?? "unknown").toLowerCase().replace(/[^a-z0-9_-]/g, "_");
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${token(status)}` }, String(status ?? "unknown"));
}

export function shorten(text, limit) {
  const value = String(text ?? "");
  if (value.length <= limit) return value;
  const cut = value.slice(0, limit);
  const space = cut.lastIndexOf(" ");
  return (space > limit * 0.6 ? cut.slice(0, space) : cut) + "…";
}

const pad = (n) => String(n).padStart(2, "0");

/** A <time> of a Unix time in seconds: local date and time, ISO in datetime. */
export function timeOf(seconds) {
  if (seconds === null || seconds === undefined) return h("span", { class: "muted" }, "–");
  const d = new Date(seconds * 1000);
  const text =
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return h("time", { datetime: d.toISOString(), title: ago(seconds) }, text);
}

export function ago(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  const minutes = Math.floor(ms / 60000);
  return `${minutes} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function runDuration(run) {
  if (!run.started_at) return null;
  const end = run.finished_at ?? Date.now() / 1000;
  return (end - run.started_at) * 1000;
}

export function percent(rate) {
  return rate === null || rate === undefined ? "–" : `${Math.round(rate * 100)}%`;
}

/** JSON text pretty-printed when it parses, else as it is. */
export function prettyJSON(value) {
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try {
    return JSON.stringify(JSON.parse(value), null, 2);
  } catch {
    return value;
  }
}

/** A definition list from [term, value] pairs (values: text or nodes; null: left out). */
export function facts(pairs, attrs = {}) {
  const list = h("dl", { class: "facts", ...attrs });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined) continue;
    list.append(h("div", {}, h("dt", {}, term), h("dd", {}, value)));
  }
  return list;
}

/** Tell screen readers something (politely) without moving focus. */
export function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  setTimeout(() => (region.textContent = text), 50);
}

// A run whose status is not one of these may still change (queued, running, or a status
// a later version adds, such as waiting for an approval).
export const FINAL_STATUSES = new Set(["succeeded", "failed", "cancelled", "needs_attention"]);
export const isActive = (run) => !FINAL_STATUSES.has(run.status);
