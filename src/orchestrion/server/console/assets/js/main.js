// The console's entry point: the key (asked once, kept for the tab's session), the
// routes (real URLs under /ui/, so a link can be shared and opened in a new tab), and the
// page in <main>.

import { session, whoami } from "./api.js";
import { h } from "./dom.js";
import breakersPage from "./pages/breakers.js";
import conversationPage from "./pages/conversation.js";
import runPage from "./pages/run.js";
import runsPage from "./pages/runs.js";

const ROUTES = [
  [/^$/, runsPage, "runs"],
  [/^runs\/([^/]+)$/, runPage, "runs"],
  [/^conversations\/(.+)$/, conversationPage, "runs"],
  [/^breakers$/, breakersPage, "breakers"],
];

const main = document.getElementById("main");
let context = null; // what the key may read (GET /v1/whoami)
let cleanup = () => {};
let rendering = 0;

function routePath() {
  const base = new URL(document.baseURI).pathname; // e.g. /ui/
  const path = location.pathname === base.replace(/\/$/, "") ? base : location.pathname;
  return path.startsWith(base) ? path.slice(base.length) : null;
}

async function render({ focus = true } = {}) {
  const mine = ++rendering;
  cleanup();
  cleanup = () => {};
  if (!context) return showLogin();
  const path = routePath() ?? "";
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.toggleAttribute("aria-current", false);
    if (route && link.dataset.nav === route[2]) link.setAttribute("aria-current", "page");
  }
  if (!route) {
    document.title = "Not found · orchestrion console";
    main.replaceChildren(
      h("h1", { tabindex: "-1" }, "No such page"),
      h("p", {}, h("a", { href: "./" }, "Back to the runs")),
    );
  } else {
    const params = route[0].exec(path).slice(1).map(decodeURIComponent);
    const done = await route[1]({ main, params, context, navigate });
    if (mine !== rendering) {
      done?.(); // the operator went elsewhere meanwhile
      return;
    }
    cleanup = done ?? (() => {});
  }
  if (focus) main.querySelector("h1")?.focus();
}

/** Go to a console URL (relative to /ui/) without reloading the page. */
export function navigate(href, { focus = true } = {}) {
  const url = new URL(href, document.baseURI);
  const keep = focus ? null : document.activeElement?.id;
  history.pushState({}, "", url);
  render({ focus }).then(() => {
    if (keep) document.getElementById(keep)?.focus();
  });
}

// Links inside the console navigate in place (a modified click opens a tab as usual).
document.addEventListener("click", (event) => {
  const link = event.target.closest?.("a[href]");
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || link.target) return;
  if (link.hasAttribute("data-skip")) {
    event.preventDefault();
    main.focus();
    return;
  }
  const url = new URL(link.href);
  const base = new URL(document.baseURI);
  if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname.replace(/\/$/, ""))) return;
  event.preventDefault();
  navigate(url.href);
});
window.addEventListener("popstate", () => render({ focus: false }));

// ---- the key -----------------------------------------------------------------------------

function showLogin(message) {
  cleanup();
  cleanup = () => {};
  context = null;
  document.getElementById("session").hidden = true;
  document.title = "Sign in · orchestrion console";
  const input = h("input", {
    id: "api-key",
    name: "key",
    type: "password",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "api-key-help",
  });
  const error = h("p", { class: "error-text", role: "alert", id: "login-error" }, message ?? "");
  const button = h("button", { type: "submit" }, "Open the console");
  const form = h(
    "form",
    { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title", tabindex: "-1" }, "orchestrion console"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h(
      "p",
      { id: "api-key-help", class: "muted" },
      "The key of your tenant (the same as for the API). It is kept in this tab only, " +
        "until you close it or choose Forget key.",
    ),
    button,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.textContent = "";
    const ok = await signIn(input.value.trim(), { focus: true });
    button.disabled = false;
    if (!ok) {
      error.textContent = "This key is not accepted.";
      input.focus();
    }
  });
  main.replaceChildren(form);
  input.focus();
}

async function signIn(key, { focus = false } = {}) {
  if (!key) return false;
  try {
    context = await whoami(key);
  } catch (error) {
    if (error.status === 401 || error.status === 403) return false;
    main.replaceChildren(h("h1", {}, "The service does not answer"), h("p", {}, error.message));
    return true;
  }
  session.key = key;
  const scope = document.getElementById("scope");
  scope.textContent = context.all_tenants ? "Every tenant (local console)" : `Tenant: ${context.tenant}`;
  document.getElementById("session").hidden = false;
  await render({ focus });
  return true;
}

document.getElementById("forget").addEventListener("click", () => {
  session.forget();
  showLogin("The key is forgotten.");
});
window.addEventListener("console:unauthorized", () =>
  showLogin("The key is no longer accepted: give it again."),
);

// `orchestrion console` opens /ui/#key=...: the key of this process, taken from the
// fragment (which browsers never send to a server) and removed from the address bar.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("key")) {
  session.key = fragment.get("key");
  history.replaceState(null, "", location.pathname + location.search);
}
if (session.key) {
  signIn(session.key).then((ok) => ok || showLogin("The saved key is not accepted any more."));
} else {
  showLogin();
}
