// The waterfall: one row per span of a run, a bar from its start to its end on a shared
// time axis, each row a button that shows the span's attributes beside (or below) the
// list. The list is one stop for Tab (the chosen row, else the first); arrow keys, Home
// and End move between rows; Enter or Space opens one.

import { duration, facts, h, prettyJSON, statusBadge } from "./dom.js";
import { KINDS, kindOf, labelOf, rows } from "./trace.js";

const MIN_WIDTH = 0.35; // percent: the shortest bar that is still visible

export class Waterfall {
  constructor({ selected = null, onSelect = () => {} } = {}) {
    this.selected = selected;
    this.onSelect = onSelect;
    this.rowsById = new Map();
    this.list = h("ol", { class: "wf-rows", "aria-label": "Spans of the run, in order" });
    this.list.addEventListener("keydown", (event) => this.keydown(event));
    this.axis = h("div", { class: "wf-axis", "aria-hidden": "true" });
    this.detail = h("section", {
      class: "span-detail",
      id: "span-detail",
      tabindex: "-1",
      "aria-label": "Span details",
    });
    this.element = h(
      "div",
      { class: "waterfall" },
      h("div", { class: "wf-main" }, legend(), this.axis, this.list),
      this.detail,
    );
    this.structure = "";
    this.flat = [];
    this.showDetail(null);
  }

  /** Draw the model's spans; `now` (seconds) is where spans still open end for now. */
  update(model, { now } = {}) {
    this.flat = rows(model.tree());
    const structure = this.flat.map((r) => r.span.span_id).join(",");
    if (structure !== this.structure) {
      this.structure = structure;
      this.rebuild();
    }
    this.layout(now);
    const chosen = this.flat.find((r) => r.span.span_id === this.selected);
    this.showDetail(chosen ? chosen.span : null);
  }

  rebuild() {
    const focused = document.activeElement?.closest?.(".wf-row")?.dataset.span;
    this.rowsById.clear();
    const items = this.flat.map(({ span, depth }) => {
      const kind = kindOf(span);
      const bar = h("span", { class: "wf-bar" });
      const time = h("span", { class: "wf-time" });
      const label = h("span", { class: "wf-label" }, labelOf(span));
      label.style.setProperty("--depth", String(depth));
      const button = h(
        "button",
        {
          type: "button",
          class: "wf-button",
          "aria-pressed": String(span.span_id === this.selected),
          "aria-controls": "span-detail",
          onclick: () => this.select(span.span_id),
        },
        h("span", { class: "visually-hidden" }, `${KINDS[kind]}: `),
        label,
        h("span", { class: "wf-track", "aria-hidden": "true" }, bar),
        time,
      );
      const row = h(
        "li",
        { class: `wf-row kind-${kind}`, dataset: { span: span.span_id, kind } },
        button,
      );
      this.rowsById.set(span.span_id, { row, bar, time, button });
      return row;
    });
    this.list.replaceChildren(...items);
    this.rove(this.rowsById.get(focused ?? this.selected)?.button);
    if (focused) this.rowsById.get(focused)?.button.focus();
  }

  layout(now) {
    const spans = this.flat.map((r) => r.span);
    if (!spans.length) {
      this.axis.replaceChildren();
      return;
    }
    const start = Math.min(...spans.map((s) => s.start));
    const end = Math.max(...spans.map((s) => endOf(s, now)), start + 0.001);
    const total = end - start;
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
      const tick = h("span", { class: "wf-tick" }, duration(f * total * 1000));
      tick.style.left = `${f * 100}%`;
      return tick;
    });
    this.axis.replaceChildren(h("span", { class: "wf-ticks" }, ticks));
    for (const span of spans) {
      const parts = this.rowsById.get(span.span_id);
      if (!parts) continue;
      const spanEnd = endOf(span, now);
      const point = spanEnd - span.start <= 0 && span.type !== "retry.wait";
      const left = ((span.start - start) / total) * 100;
      const width = Math.max(((spanEnd - span.start) / total) * 100, MIN_WIDTH);
      parts.bar.style.left = `${Math.min(left, 100 - MIN_WIDTH)}%`;
      parts.bar.style.width = point ? "" : `${Math.min(width, 100 - left)}%`;
      parts.row.classList.toggle("point", point);
      parts.row.classList.toggle("open", isOpen(span));
      parts.row.classList.toggle("error", isError(span));
      parts.time.textContent = isOpen(span)
        ? `running ${duration((spanEnd - span.start) * 1000)}`
        : point
          ? ""
          : duration(lengthOf(span, now));
    }
  }

  select(spanId) {
    this.selected = spanId;
    for (const [id, parts] of this.rowsById) {
      parts.button.setAttribute("aria-pressed", String(id === spanId));
    }
    this.rove(this.rowsById.get(spanId)?.button);
    const chosen = this.flat.find((r) => r.span.span_id === spanId);
    this.showDetail(chosen ? chosen.span : null);
    this.onSelect(spanId);
    if (window.matchMedia("(max-width: 900px)").matches) {
      this.detail.scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
  }

  keydown(event) {
    const buttons = [...this.list.querySelectorAll(".wf-button")];
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const next = {
      ArrowDown: at + 1,
      ArrowUp: at - 1,
      Home: 0,
      End: buttons.length - 1,
    }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = buttons[Math.max(0, Math.min(buttons.length - 1, next))];
    this.rove(target);
    target.focus();
  }

  /** Make `button` (else the first row's) the one row Tab stops at. */
  rove(button) {
    const buttons = [...this.list.querySelectorAll(".wf-button")];
    const current = button ?? buttons[0];
    for (const b of buttons) b.tabIndex = b === current ? 0 : -1;
  }

  showDetail(span) {
    const key = span ? JSON.stringify(span) : "";
    if (key === this.shown) return; // unchanged: keep the reader's scroll and selection
    this.shown = key;
    if (!span) {
      this.detail.replaceChildren(
        h("h3", {}, "Span details"),
        h("p", { class: "muted" }, "Choose a span in the timeline to see its attributes."),
      );
      return;
    }
    this.detail.replaceChildren(...detailOf(span));
  }
}

function endOf(span, now) {
  if (span.type === "retry.wait" && typeof span.attributes?.delay === "number") {
    return span.start + span.attributes.delay;
  }
  if (span.end !== null && span.end !== undefined) return span.end;
  return Math.max(span.start, now ?? span.start);
}

/** How long a span lasted, in ms (a retry's wait: the delay it waited). */
function lengthOf(span, now) {
  if (span.type === "retry.wait" || span.latency_ms === null || span.latency_ms === undefined) {
    return (endOf(span, now) - span.start) * 1000;
  }
  return span.latency_ms;
}

const isOpen = (span) => span.type?.endsWith(".started") && (span.end ?? null) === null;
const isError = (span) =>
  (span.status && span.status !== "ok") ||
  span.attributes?.is_error === true ||
  Boolean(span.attributes?.["error.type"]);

function legend() {
  const items = ["run", "model", "tool", "retry", "breaker", "fallback", "repair", "state"];
  return h(
    "ul",
    { class: "wf-legend", "aria-label": "Kinds of spans" },
    items.map((kind) => h("li", { class: `kind-${kind}` }, h("span", { class: "swatch" }), KINDS[kind])),
  );
}

/** The detail panel's content: what a span is, then what it carried. */
function detailOf(span) {
  const a = span.attributes ?? {};
  const kind = kindOf(span);
  const child = (type) => span.children?.find((c) => c.type === type)?.attributes ?? null;
  const response = child("model.response");
  const result = child("tool.result");
  const ms = span.end || span.type === "retry.wait" ? lengthOf(span) : null;
  const out = [
    h("h3", { id: "span-detail-title" }, labelOf(span)),
    facts([
      ["Kind", KINDS[kind]],
      ["Type", h("code", {}, span.type)],
      ["Status", span.status ? statusBadge(span.status) : isOpen(span) ? statusBadge("running") : null],
      ["Duration", ms !== null ? duration(ms) : isOpen(span) ? "still running" : null],
      ["Attempts", a.attempts ?? null],
      ["Idempotency key", a.idempotency_key ? h("code", { "data-field": "idempotency_key" }, a.idempotency_key) : null],
      ["Tool", a["gen_ai.tool.name"] ?? null],
      ["Tool call id", a["gen_ai.tool.call.id"] ? h("code", {}, a["gen_ai.tool.call.id"]) : null],
      ["Effect", a.effect ?? null],
      ["Model", a["gen_ai.request.model"] ?? a["gen_ai.response.model"] ?? null],
      ["Tokens", tokens(response ?? a)],
      ["Finish reasons", (response ?? a)["gen_ai.response.finish_reasons"]?.join(", ") ?? null],
      ["Span id", h("code", {}, span.span_id)],
    ]),
  ];
  const block = (title, field, value, extra = "") =>
    out.push(
      h("h4", {}, title),
      h("pre", { class: `value ${extra}`, "data-field": field }, value),
    );
  if (a.arguments !== undefined) block("Arguments", "arguments", prettyJSON(a.arguments));
  const resultValue = result?.result ?? (span.type === "tool.result" ? a.result : undefined);
  if (resultValue !== undefined) {
    const failed = result?.is_error || (span.type === "tool.result" && a.is_error);
    block(failed ? "Result (error)" : "Result", "result", prettyJSON(resultValue), failed ? "error" : "");
  }
  const error = errorOf(a);
  if (error) block("Error", "error", error, "error");
  const text = response?.text ?? (span.type === "model.response" ? a.text : undefined);
  if (text) block("Response text", "response_text", text);
  const calls = response?.tool_calls ?? (span.type === "model.response" ? a.tool_calls : null);
  if (calls?.length) block("Tool calls", "tool_calls", calls.join(", "));
  if (a.answer !== undefined) block("Answer", "answer", a.answer);
  if (a.reason) block("Reason", "reason", String(a.reason));
  out.push(
    h(
      "details",
      { class: "all-attributes" },
      h("summary", {}, "All attributes"),
      h("pre", { class: "value", "data-field": "attributes" }, JSON.stringify(a, null, 2)),
    ),
  );
  return out;
}

function tokens(a) {
  const input = a["gen_ai.usage.input_tokens"];
  const output = a["gen_ai.usage.output_tokens"];
  if (input === undefined && output === undefined) return null;
  return `${input ?? "?"} in, ${output ?? "?"} out`;
}

function errorOf(a) {
  if (a.error && typeof a.error === "object") {
    return `${a.error.type ?? "error"}: ${a.error.message ?? JSON.stringify(a.error)}`;
  }
  if (a.error) return a.error_type ? `${a.error_type}: ${a.error}` : String(a.error);
  if (a["error.type"]) return String(a["error.type"]);
  return null;
}

