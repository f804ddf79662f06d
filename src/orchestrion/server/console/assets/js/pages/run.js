// A run: what was asked, the answer (or the error), and the timeline as a waterfall. While
// the run is not over, its events are followed live (SSE with resumption): streamed text
// shows as it arrives, and each batch of other events reads the trace again from the last
// seq seen, so the waterfall grows.

import { ApiError, getJSON, postJSON } from "../api.js";
import { followEvents, textOf } from "../events.js";
import {
  announce,
  duration,
  facts,
  h,
  isActive,
  pageHref,
  pageLink,
  runDuration,
  statusBadge,
  timeOf,
} from "../dom.js";
import { TraceModel } from "../trace.js";
import { Waterfall } from "../waterfall.js";

const MAX_TRACE_PAGES = 20; // 20,000 events: more than any agent's turn holds
const TICK_MS = 500;

export default async function runPage({ main, params }) {
  const runId = params[0];
  document.title = `Run ${runId} · orchestrion console`;
  const controller = new AbortController();
  const { signal } = controller;
  let run;
  try {
    run = await getJSON(`/v1/runs/${encodeURIComponent(runId)}`, { signal });
  } catch (error) {
    main.replaceChildren(...notFound("run", runId, error));
    return () => controller.abort();
  }

  const model = new TraceModel();
  const query = new URLSearchParams(location.search);
  const waterfall = new Waterfall({
    selected: query.get("span"),
    onSelect: (spanId) => {
      // (An absolute URL: a relative one would resolve against <base>, not this page.)
      const url = new URL(location.href);
      url.searchParams.set("span", spanId);
      history.replaceState(history.state, "", url.href);
    },
  });
  const heading = h("h1", { tabindex: "-1" });
  const summary = h("div", { class: "summary" });
  const actions = h("div", { class: "actions" });
  const liveState = h("p", { class: "live-state", role: "status" });
  const answer = h("div", { class: "answer" });
  const streamed = h("pre", { class: "value streamed", "data-field": "streamed" });
  const truncated = h("p", { class: "muted" });
  main.replaceChildren(
    h(
      "nav",
      { class: "breadcrumb", "aria-label": "Breadcrumb" },
      h("ol", {}, h("li", {}, h("a", { href: "./" }, "Runs")), h("li", { "aria-current": "page" }, runId)),
    ),
    heading,
    actions,
    liveState,
    h("section", { "aria-labelledby": "summary-title" }, h("h2", { id: "summary-title", class: "visually-hidden" }, "Summary"), summary),
    h("section", { "aria-labelledby": "message-title" }, h("h2", { id: "message-title" }, "Message"), h("p", { class: "text message-text", "data-field": "message" }, run.message || "–")),
    h("section", { "aria-labelledby": "answer-title" }, h("h2", { id: "answer-title" }, "Answer"), answer),
    h(
      "section",
      { "aria-labelledby": "timeline-title", class: "timeline" },
      h("h2", { id: "timeline-title" }, "Timeline"),
      truncated,
      waterfall.element,
    ),
    h(
      "details",
      { class: "streamed-wrap" },
      h("summary", {}, "Text as it streamed"),
      streamed,
    ),
  );

  // ---- drawing -----------------------------------------------------------------------
  const texts = new Map(); // step span -> streamed text (text.reset empties one step)
  let clockSkew = 0; // server clock minus this browser's, from the events' times
  const now = () => Date.now() / 1000 + clockSkew;

  function drawRun() {
    heading.replaceChildren("Run ", h("code", {}, run.id), " ", statusBadge(run.status));
    heading.dataset.status = run.status;
    const root = model.tree()[0]?.attributes ?? {};
    summary.replaceChildren(
      facts([
        ["Status", statusBadge(run.status)],
        ["Agent", run.agent],
        ["Conversation", pageLink("conversations", run.conversation_id, null, { class: "mono" })],
        ["Tenant", run.tenant ?? null],
        ["Created", timeOf(run.created_at)],
        ["Started", timeOf(run.started_at)],
        ["Finished", run.finished_at ? timeOf(run.finished_at) : null],
        ["Duration", duration(runDuration(run))],
        ["Tokens", root["gen_ai.usage.input_tokens"] !== undefined ? `${root["gen_ai.usage.input_tokens"]} in, ${root["gen_ai.usage.output_tokens"]} out` : null],
        ["Trace id", h("code", {}, run.trace_id)],
        ["Cancel requested", run.cancel_requested && isActive(run) ? "yes" : null],
      ]),
    );
    drawAnswer();
    drawActions();
  }

  function drawAnswer() {
    const live = [...texts.values()].join("");
    streamed.textContent = live;
    if (run.error) {
      answer.replaceChildren(
        h(
          "div",
          { class: "error-box", "data-field": "error" },
          h("strong", {}, run.error.type ?? "error"),
          ": ",
          run.error.message ?? JSON.stringify(run.error),
        ),
      );
    } else if (!isActive(run)) {
      answer.replaceChildren(
        run.answer
          ? h("p", { class: "text", "data-field": "answer" }, run.answer)
          : h("p", { class: "muted", "data-field": "answer" }, `No answer (${run.status}).`),
      );
    } else {
      answer.replaceChildren(
        live
          ? h("p", { class: "text streaming", "data-field": "answer-live", "aria-busy": "true" }, live)
          : h("p", { class: "muted" }, run.status === "queued" ? "Waiting to start…" : "Working…"),
      );
    }
  }

  function drawActions() {
    if (!isActive(run)) return actions.replaceChildren();
    if (run.cancel_requested) {
      return actions.replaceChildren(h("p", { class: "muted" }, "Cancellation requested."));
    }
    const ask = h("button", { type: "button", class: "danger" }, "Cancel run…");
    ask.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: "danger" }, "Yes, cancel this run");
      const no = h("button", { type: "button" }, "Keep it running");
      yes.addEventListener("click", async () => {
        try {
          run = await postJSON(`/v1/runs/${encodeURIComponent(run.id)}/cancel`, { signal });
          announce("Cancellation requested");
        } catch (error) {
          announce(`Cancel failed: ${error.message}`);
        }
        drawRun();
      });
      no.addEventListener("click", () => {
        drawActions();
        actions.querySelector("button")?.focus();
      });
      actions.replaceChildren(h("p", {}, "Cancel this run? It stops at its next step."), yes, no);
      no.focus();
    });
    actions.replaceChildren(ask);
  }

  function drawTimeline() {
    waterfall.update(model, { now: now() });
  }

  // ---- reading -----------------------------------------------------------------------
  async function readTrace() {
    let url = `/v1/runs/${encodeURIComponent(run.id)}/trace`;
    let params = model.lastSeq ? { after: model.lastSeq } : {};
    for (let page = 0; url && page < MAX_TRACE_PAGES; page++) {
      const body = await getJSON(url, { params, signal });
      model.addPage(body);
      url = body.next;
      params = {};
    }
    truncated.textContent = url
      ? `Only the first ${MAX_TRACE_PAGES * 1000} events are drawn; the command line's ` +
        "`orchestrion trace` shows them all."
      : "";
  }

  async function refresh() {
    await readTrace();
    run = await getJSON(`/v1/runs/${encodeURIComponent(run.id)}`, { signal });
    drawRun();
    drawTimeline();
  }

  try {
    await readTrace();
  } catch (error) {
    if (error.name === "AbortError") return () => {};
    truncated.textContent = `The trace could not be read: ${error.message}`;
  }
  drawRun();
  drawTimeline();

  let ticker = null;
  let pending = null;
  if (isActive(run)) {
    ticker = setInterval(() => waterfall.layout(now()), TICK_MS);
    const schedule = () => {
      if (pending) return;
      pending = setTimeout(async () => {
        pending = null;
        try {
          await refresh();
        } catch (error) {
          if (error.name !== "AbortError") liveState.textContent = `Refresh failed: ${error.message}`;
        }
      }, 150);
    };
    const states = {
      connecting: "Live: connecting…",
      live: "Live: following the run's events.",
      reconnecting: "Live: connection lost, reconnecting…",
      ended: "",
      gone: "The run is no longer visible.",
    };
    // From the first event: the text streamed so far is not part of the trace.
    followEvents(run.id, {
      after: 0,
      signal,
      onState: (state) => {
        liveState.textContent = states[state] ?? "";
        liveState.dataset.state = state;
      },
      onEvent: (event) => {
        const start = event.data?.start;
        if (typeof start === "number" && event.id > model.lastSeq) {
          clockSkew = start - Date.now() / 1000;
        }
        if (event.type === "text.delta" || event.type === "text.reset") {
          const { step, text } = textOf(event);
          texts.set(step, event.type === "text.reset" ? "" : (texts.get(step) ?? "") + text);
          if (isActive(run)) drawAnswer();
          return;
        }
        if (event.id !== null && event.id <= model.lastSeq) return; // already drawn
        schedule();
      },
    }).then(async () => {
      clearInterval(ticker);
      if (signal.aborted) return;
      clearTimeout(pending);
      pending = null;
      try {
        await refresh();
        liveState.textContent = "";
        announce(`Run ${run.status}`);
      } catch (error) {
        if (error.name !== "AbortError") liveState.textContent = `Refresh failed: ${error.message}`;
      }
    });
  }

  return () => {
    controller.abort();
    clearInterval(ticker);
    clearTimeout(pending);
  };
}

/** The page for an id that is unknown (or another tenant's: the same answer). */
export function notFound(kind, id, error) {
  const missing = error instanceof ApiError && error.status === 404;
  return [
    h("h1", { tabindex: "-1" }, missing ? `No such ${kind}` : `The ${kind} could not be read`),
    h(
      "p",
      {},
      missing ? `No ${kind} you can see has the id ` : `${error.message} (id `,
      h("code", {}, id),
      missing ? "." : ")",
    ),
    h("p", {}, h("a", { href: pageHref("runs") }, "Back to the runs")),
  ];
}
