// The table of runs (the runs page, a conversation's runs). On a narrow screen each row
// becomes a card whose cells are labelled (CSS reads data-label).

import { duration, h, pageLink, runDuration, shorten, statusBadge, timeOf } from "../dom.js";

export function runsTable(runs, { caption, showTenant = false, showConversation = true } = {}) {
  const columns = [
    "Status",
    "Run",
    "Message",
    "Answer or error",
    "Agent",
    ...(showConversation ? ["Conversation"] : []),
    ...(showTenant ? ["Tenant"] : []),
    "Created",
    "Duration",
  ];
  const body = h(
    "tbody",
    {},
    runs.map((run) =>
      h(
        "tr",
        { dataset: { run: run.id, status: run.status } },
        cell("Status", statusBadge(run.status)),
        cell("Run", pageLink("runs", run.id, run.id, { class: "mono", "data-run-link": run.id })),
        cell("Message", shorten(run.message, 140)),
        cell("Answer or error", outcome(run)),
        cell("Agent", run.agent),
        showConversation &&
          cell("Conversation", pageLink("conversations", run.conversation_id, null, { class: "mono" })),
        showTenant && cell("Tenant", run.tenant),
        cell("Created", timeOf(run.created_at)),
        cell("Duration", duration(runDuration(run))),
      ),
    ),
  );
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "runs responsive" },
      h("caption", { class: caption ? "" : "visually-hidden" }, caption ?? "Runs, newest first"),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
      body,
    ),
  );
}

function cell(label, ...content) {
  return h("td", { "data-label": label }, ...content);
}

function outcome(run) {
  if (run.error) {
    const text = `${run.error.type ?? "error"}: ${run.error.message ?? ""}`;
    return h("span", { class: "error-text" }, shorten(text, 160));
  }
  if (run.cancel_requested && run.status !== "cancelled") return h("em", {}, "cancel requested");
  return shorten(run.answer, 160);
}
