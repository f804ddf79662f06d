// Runs: newest first, filtered by status, agent, conversation and time; a search that
// goes straight to a run or a conversation by id; paged; live (the newest page is read
// again every two seconds while the tab is visible).

import { ApiError, getJSON } from "../api.js";
import { announce, h, pageHref } from "../dom.js";
import { runsTable } from "./runs-table.js";

const PAGE = 50;
const REFRESH_MS = 2000;
const PERIODS = [
  ["", "Any time"],
  ["15m", "Last 15 minutes"],
  ["1h", "Last hour"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
];
const SECONDS = { m: 60, h: 3600, d: 86400 };

function sinceOf(period) {
  const match = /^(\d+)([mhd])$/.exec(period ?? "");
  return match ? Math.floor(Date.now() / 1000 - Number(match[1]) * SECONDS[match[2]]) : null;
}

export default function runsPage({ main, context, navigate }) {
  const query = new URLSearchParams(location.search);
  const before = query.get("before");
  const live = query.get("live") !== "0" && !before;
  document.title = "Runs · orchestrion console";

  const listStatus = h("p", { class: "list-status", role: "status" });
  const holder = h("div", { class: "runs-holder" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of runs" });
  main.replaceChildren(
    h("h1", { tabindex: "-1" }, "Runs"),
    searchForm(navigate),
    filterForm(query, context, live, navigate),
    listStatus,
    holder,
    pager,
  );

  let timer = null;
  let controller = null;
  let shown = null; // the JSON of the page on screen
  let known = null; // run ids on screen (to announce new ones)

  async function load() {
    controller?.abort();
    controller = new AbortController();
    const params = {
      limit: PAGE,
      status: query.get("status"),
      agent: query.get("agent"),
      conversation: query.get("conversation"),
      since: sinceOf(query.get("period")),
      before,
    };
    try {
      const page = await getJSON("/v1/runs", { params, signal: controller.signal });
      const json = JSON.stringify(page.runs) + page.next;
      if (json !== shown) {
        shown = json;
        render(page);
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      listStatus.textContent = `The runs could not be read: ${error.message}`;
      listStatus.classList.add("error-text");
    }
    if (live) timer = setTimeout(tick, REFRESH_MS);
  }

  function tick() {
    if (document.visibilityState === "visible") load();
    else timer = setTimeout(tick, REFRESH_MS);
  }

  function render(page) {
    const focused = document.activeElement?.dataset?.runLink;
    const ids = page.runs.map((r) => r.id);
    if (known) {
      const added = ids.filter((id) => !known.has(id)).length;
      if (added) announce(`${added} new run${added > 1 ? "s" : ""}`);
    }
    known = new Set(ids);
    listStatus.classList.remove("error-text");
    const filtered = ["status", "agent", "conversation", "period"].some((n) => query.get(n));
    if (!page.runs.length) {
      listStatus.textContent = filtered ? "No runs match these filters." : "No runs yet.";
      holder.replaceChildren();
    } else {
      const count = `${page.runs.length} run${page.runs.length > 1 ? "s" : ""}`;
      listStatus.textContent = `${count}, newest first${live ? " · live" : ""}`;
      holder.replaceChildren(runsTable(page.runs, { showTenant: context.all_tenants }));
      if (focused) holder.querySelector(`[data-run-link="${CSS.escape(focused)}"]`)?.focus();
    }
    const links = [];
    if (before) {
      const newest = new URLSearchParams(query);
      newest.delete("before");
      links.push(h("a", { href: `./?${newest}` }, "← Newest runs"));
    }
    if (page.next) {
      const older = new URLSearchParams(query);
      older.set("before", new URL(page.next, location.origin).searchParams.get("before"));
      links.push(h("a", { href: `./?${older}`, rel: "next" }, "Older runs →"));
    }
    pager.replaceChildren(...links);
  }

  load();
  return () => {
    clearTimeout(timer);
    controller?.abort();
  };
}

function searchForm(navigate) {
  const input = h("input", {
    id: "find-id",
    name: "id",
    type: "search",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "run_… or conv_…",
  });
  const result = h("p", { class: "find-result", role: "status" });
  const form = h(
    "form",
    { class: "find", role: "search", "aria-label": "Find by id" },
    h("label", { for: "find-id" }, "Find a run or conversation by id"),
    h("div", { class: "inline" }, input, h("button", { type: "submit" }, "Find")),
    result,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (!id) return;
    result.textContent = "Looking…";
    try {
      for (const [kind, path, params] of [
        ["runs", `/v1/runs/${encodeURIComponent(id)}`, {}],
        ["conversations", `/v1/conversations/${encodeURIComponent(id)}`, { limit: 1 }],
      ]) {
        try {
          await getJSON(path, { params });
          return navigate(pageHref(kind, id));
        } catch (error) {
          if (!(error instanceof ApiError) || error.status !== 404) throw error;
        }
      }
      result.textContent = `No run or conversation has the id “${id}”.`;
    } catch (error) {
      result.textContent = `The search failed: ${error.message}`;
    }
  });
  return form;
}

function filterForm(query, context, live, navigate) {
  const field = (id, label, control) =>
    h("div", { class: "field" }, h("label", { for: id }, label), control);
  const select = (id, name, options, value) =>
    h(
      "select",
      { id, name },
      options.map(([v, text]) => h("option", { value: v, selected: v === (value ?? "") }, text)),
    );
  const statuses = [["", "Any status"], ...context.run_statuses.map((s) => [s, s.replace("_", " ")])];
  const agents = h(
    "datalist",
    { id: "agent-names" },
    context.agents.map((a) => h("option", { value: a })),
  );
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter runs" },
    field("filter-status", "Status", select("filter-status", "status", statuses, query.get("status"))),
    field(
      "filter-agent",
      "Agent",
      h("input", { id: "filter-agent", name: "agent", list: "agent-names", value: query.get("agent") ?? "", autocomplete: "off" }),
    ),
    agents,
    field(
      "filter-conversation",
      "Conversation",
      h("input", { id: "filter-conversation", name: "conversation", value: query.get("conversation") ?? "", autocomplete: "off", spellcheck: "false" }),
    ),
    field("filter-period", "Created", select("filter-period", "period", PERIODS, query.get("period"))),
    h(
      "div",
      { class: "field checkbox" },
      h("input", { id: "filter-live", name: "live", type: "checkbox", checked: live, disabled: Boolean(query.get("before")) }),
      h("label", { for: "filter-live" }, "Live updates"),
    ),
    h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply filters")),
  );
  const apply = () => {
    const next = new URLSearchParams();
    for (const name of ["status", "agent", "conversation", "period"]) {
      const value = form.elements[name].value.trim();
      if (value) next.set(name, value);
    }
    if (!form.elements.live.checked) next.set("live", "0");
    const search = next.toString();
    navigate(search ? `./?${search}` : "./", { focus: false });
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  // Choices apply at once (text fields on Enter or with the button).
  for (const name of ["status", "period", "live"]) form.elements[name].addEventListener("change", apply);
  return form;
}
