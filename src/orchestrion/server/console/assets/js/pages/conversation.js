// A conversation: its current state, its messages (newest page first, older on demand)
// and its runs. While one of its runs is not over, the page reads it again every two
// seconds.

import { getJSON } from "../api.js";
import { facts, h, isActive, prettyJSON, timeOf, token } from "../dom.js";
import { notFound } from "./run.js";
import { runsTable } from "./runs-table.js";

const MESSAGES = 50;
const RUNS = 20;
const REFRESH_MS = 2000;

export default async function conversationPage({ main, params, context }) {
  const id = params[0];
  const path = `/v1/conversations/${encodeURIComponent(id)}`;
  document.title = `Conversation ${id} · orchestrion console`;
  const controller = new AbortController();
  const { signal } = controller;
  let detail;
  try {
    detail = await getJSON(path, { params: { limit: MESSAGES }, signal });
  } catch (error) {
    main.replaceChildren(...notFound("conversation", id, error));
    return () => controller.abort();
  }

  const heading = h("h1", { tabindex: "-1" });
  const summary = h("div", { class: "summary" });
  const messages = h("ol", { class: "messages", "aria-label": "Messages, oldest first" });
  const older = h("div", { class: "older" });
  const runs = h("div");
  const runsPager = h("nav", { class: "pager", "aria-label": "Pages of runs" });
  main.replaceChildren(
    h(
      "nav",
      { class: "breadcrumb", "aria-label": "Breadcrumb" },
      h("ol", {}, h("li", {}, h("a", { href: "./" }, "Runs")), h("li", { "aria-current": "page" }, id)),
    ),
    heading,
    summary,
    h("section", { "aria-labelledby": "messages-title" }, h("h2", { id: "messages-title" }, "Messages"), older, messages),
    h("section", { "aria-labelledby": "runs-title" }, h("h2", { id: "runs-title" }, "Runs"), runs, runsPager),
  );

  let olderCursor = detail.next;
  let shownVersion = null;

  function drawSummary() {
    heading.replaceChildren("Conversation ", h("code", {}, detail.id));
    summary.replaceChildren(
      facts([
        ["State", h("span", { class: "badge state", "data-field": "state" }, detail.state)],
        ["Agent", detail.agent],
        ["Messages", String(detail.message_count)],
        ["Turns completed", String(detail.version)],
        ["Created", timeOf(detail.created_at)],
        ["Updated", timeOf(detail.updated_at)],
        ["Expires", timeOf(detail.expires_at)],
      ]),
    );
  }

  function drawOlderButton() {
    if (!olderCursor) return older.replaceChildren();
    const button = h("button", { type: "button" }, "Show older messages");
    button.addEventListener("click", async () => {
      button.disabled = true;
      const page = await getJSON(olderCursor, { signal });
      olderCursor = page.next;
      messages.prepend(...page.history.map(message));
      drawOlderButton();
      messages.querySelector(".message")?.focus();
    });
    older.replaceChildren(button);
  }

  async function drawRuns(before) {
    const page = await getJSON("/v1/runs", {
      params: { conversation: detail.id, limit: RUNS, before },
      signal,
    });
    runs.replaceChildren(
      page.runs.length
        ? runsTable(page.runs, { showConversation: false, showTenant: context.all_tenants })
        : h("p", { class: "muted" }, "No runs."),
    );
    const links = [];
    if (before) {
      const newest = h("button", { type: "button" }, "← Newest runs");
      newest.addEventListener("click", () => drawRuns(null));
      links.push(newest);
    }
    if (page.next) {
      const cursor = new URL(page.next, location.origin).searchParams.get("before");
      const next = h("button", { type: "button" }, "Older runs →");
      next.addEventListener("click", () => drawRuns(cursor));
      links.push(next);
    }
    runsPager.replaceChildren(...links);
    return page.runs;
  }

  async function draw() {
    drawSummary();
    if (shownVersion !== `${detail.version}/${detail.message_count}`) {
      shownVersion = `${detail.version}/${detail.message_count}`;
      messages.replaceChildren(...detail.history.map(message));
      olderCursor = detail.next;
      drawOlderButton();
    }
    return drawRuns(null);
  }

  let timer = null;
  async function poll() {
    try {
      detail = await getJSON(path, { params: { limit: MESSAGES }, signal });
      const recent = await draw();
      if (recent.some(isActive) || /PROCESSING|STREAMING|RECOVERY/.test(detail.state)) {
        timer = setTimeout(poll, REFRESH_MS);
      }
    } catch (error) {
      if (error.name !== "AbortError") timer = setTimeout(poll, REFRESH_MS * 2);
    }
  }
  const recent = await draw().catch(() => []);
  if (recent.some(isActive)) timer = setTimeout(poll, REFRESH_MS);

  return () => {
    controller.abort();
    clearTimeout(timer);
  };
}

/** One message of the history: a user's, an assistant's (with its tool calls), a tool's. */
function message(m) {
  const parts = [
    h(
      "div",
      { class: "message-head" },
      h("span", { class: `role role-${token(m.role)}` }, m.role),
      m.name ? h("span", { class: "muted" }, ` ${m.name}`) : null,
      h("span", { class: "muted index" }, `#${m.index}`),
    ),
  ];
  if (m.content) parts.push(h("p", { class: `text${m.is_error ? " error-text" : ""}` }, m.content));
  for (const call of m.tool_calls ?? []) {
    const name = call.name ?? call.function?.name ?? "tool";
    const args = call.arguments ?? call.function?.arguments ?? "";
    parts.push(
      h(
        "div",
        { class: "tool-call" },
        h("span", { class: "muted" }, "calls "),
        h("code", {}, name),
        h("pre", { class: "value" }, prettyJSON(args)),
      ),
    );
  }
  return h("li", { class: `message role-${token(m.role)}`, tabindex: "-1" }, parts);
}

