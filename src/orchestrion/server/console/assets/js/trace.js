// A run's span tree, assembled from the pages of GET /v1/runs/{id}/trace. A span whose
// events straddle two pages is on both: nodes merge by span_id, later pages winning
// (they hold the span's end). Fetching `?after=<last seq>` again later adds what
// happened since, which is how the live view grows the waterfall.

const FIELDS = ["name", "type", "start", "end", "latency_ms", "status", "parent_span_id"];

export class TraceModel {
  constructor() {
    this.nodes = new Map(); // span_id -> node (without children)
    this.order = []; // span ids, first seen first
    this.lastSeq = 0;
  }

  /** Merge one page ({spans, last_seq}). Returns whether a span was added. */
  addPage(page) {
    let added = false;
    const visit = (span) => {
      const { children = [], ...fields } = span;
      const known = this.nodes.get(span.span_id);
      if (!known) {
        this.nodes.set(span.span_id, { ...fields, attributes: { ...fields.attributes } });
        this.order.push(span.span_id);
        added = true;
      } else {
        for (const name of FIELDS) {
          if (fields[name] !== null && fields[name] !== undefined) known[name] = fields[name];
        }
        Object.assign(known.attributes, fields.attributes);
      }
      children.forEach(visit);
    };
    (page.spans ?? []).forEach(visit);
    if (Number.isInteger(page.last_seq)) this.lastSeq = Math.max(this.lastSeq, page.last_seq);
    return added;
  }

  /** The tree: roots (normally the run's span), children sorted by start. */
  tree() {
    const byId = new Map();
    for (const id of this.order) byId.set(id, { ...this.nodes.get(id), children: [] });
    const roots = [];
    for (const node of byId.values()) {
      const parent = byId.get(node.parent_span_id);
      if (parent && parent !== node) parent.children.push(node);
      else roots.push(node);
    }
    for (const node of byId.values()) node.children.sort((a, b) => a.start - b.start);
    return roots.sort((a, b) => a.start - b.start);
  }
}

/** Depth-first rows: [{span, depth}] */
export function rows(roots) {
  const out = [];
  const walk = (span, depth) => {
    out.push({ span, depth });
    span.children.forEach((child) => walk(child, depth + 1));
  };
  roots.forEach((root) => walk(root, 0));
  return out;
}

// What a span is, for its colour and its legend entry. Unknown kinds of events (a later
// version's) are shown as "other", never hidden.
export const KINDS = {
  run: "Run",
  model: "Model call",
  tool: "Tool call",
  retry: "Retry",
  breaker: "Breaker",
  fallback: "Fallback",
  repair: "Argument repair",
  state: "State change",
  wait: "Wait / approval",
  compensation: "Compensation",
  detail: "Result",
  other: "Other",
};

export function kindOf(span) {
  const type = span.type ?? "";
  const operation = span.attributes?.["gen_ai.operation.name"];
  if (type.startsWith("run.")) return "run";
  if (type.startsWith("step.")) {
    if (operation === "chat" || (span.name ?? "").startsWith("chat")) return "model";
    if (operation === "execute_tool" || (span.name ?? "").startsWith("execute_tool")) return "tool";
    if (/compensat/.test(span.name ?? "")) return "compensation";
    if (/wait|approval|signal/.test(span.name ?? "")) return "wait";
    return "other";
  }
  if (type.startsWith("retry.") || type.startsWith("budget.")) return "retry";
  if (type.startsWith("breaker.")) return "breaker";
  if (type.startsWith("fallback.") || type.startsWith("hedge.")) return "fallback";
  if (type.startsWith("tool.arguments.") || type.startsWith("output.")) return "repair";
  if (type.startsWith("state.")) return "state";
  if (/^(approval|wait|signal)\./.test(type)) return "wait";
  if (/^compensation/.test(type)) return "compensation";
  if (["model.response", "tool.result", "tool.progress"].includes(type)) return "detail";
  return "other";
}

/** A short label for a row. */
export function labelOf(span) {
  const a = span.attributes ?? {};
  switch (span.type) {
    case "state.changed":
      return `state ${a.from} → ${a.to}`;
    case "model.response": {
      const calls = a.tool_calls?.length ? ` → ${a.tool_calls.join(", ")}` : "";
      return `response${calls}`;
    }
    case "tool.result":
      return a.is_error ? "result (error)" : "result";
    case "tool.progress":
      return `progress: ${a.message ?? ""}`;
    case "retry.attempt":
      return `attempt ${a.attempt ?? "?"} ${a.outcome ?? ""}`.trim();
    case "retry.wait":
      return `retry wait${a.delay !== undefined ? ` ${a.delay}s` : ""}`;
    default:
      return span.name || span.type;
  }
}
