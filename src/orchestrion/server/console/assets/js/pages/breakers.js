// Breakers: every circuit breaker of the store (shared by every worker and every tenant),
// with its state, failure and slow-call rates, calls in its window and its next probe.
// Read again every two seconds while the tab is visible.

import { getJSON } from "../api.js";
import { h, percent, timeOf, token } from "../dom.js";

const REFRESH_MS = 2000;

export default function breakersPage({ main }) {
  document.title = "Breakers · orchestrion console";
  const listStatus = h("p", { class: "list-status", role: "status" });
  const holder = h("div");
  main.replaceChildren(
    h("h1", { tabindex: "-1" }, "Breakers"),
    h(
      "p",
      { class: "muted" },
      "One circuit breaker per dependency (model endpoint, tool, resource), shared by every " +
        "worker of this store. A closed breaker shows the fleet's current window; an open " +
        "one, the window that opened it.",
    ),
    listStatus,
    holder,
  );
  let timer = null;
  let shown = "";
  const controller = new AbortController();

  async function load() {
    try {
      const body = await getJSON("/v1/breakers", { signal: controller.signal });
      const json = JSON.stringify(body.breakers.map(({ probe_in, ...rest }) => rest));
      if (json !== shown) {
        shown = json;
        draw(body);
      } else {
        updateProbes(body);
      }
    } catch (error) {
      if (error.name === "AbortError") return;
      listStatus.textContent = `The breakers could not be read: ${error.message}`;
    }
    timer = setTimeout(tick, REFRESH_MS);
  }

  function tick() {
    if (document.visibilityState === "visible") load();
    else timer = setTimeout(tick, REFRESH_MS);
  }

  function draw(body) {
    const { breakers } = body;
    listStatus.textContent = breakers.length
      ? `${breakers.length} breaker${breakers.length > 1 ? "s" : ""} · live`
      : "No breakers recorded yet (a process publishes its calls to a dependency within a second).";
    if (!breakers.length) return holder.replaceChildren();
    const columns = ["Dependency", "State", "Failure rate", "Slow calls", "Calls", "Workers", "Next probe", "Changed"];
    holder.replaceChildren(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "breakers responsive" },
          h("caption", { class: "visually-hidden" }, "Circuit breakers"),
          h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
          h(
            "tbody",
            {},
            breakers.map((b) =>
              h(
                "tr",
                { dataset: { breaker: b.name, state: b.state } },
                h("td", { "data-label": "Dependency" }, h("code", {}, b.name)),
                h("td", { "data-label": "State" }, h("span", { class: `badge breaker-${token(b.state)}` }, b.state.replace("_", "-"))),
                h("td", { "data-label": "Failure rate" }, percent(b.failure_rate)),
                h("td", { "data-label": "Slow calls" }, percent(b.slow_call_rate)),
                h("td", { "data-label": "Calls" }, b.calls ?? "–"),
                h("td", { "data-label": "Workers" }, String(b.workers)),
                h("td", { "data-label": "Next probe", "data-probe": b.name }, nextProbe(b)),
                h("td", { "data-label": "Changed" }, timeOf(b.changed_at)),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function updateProbes(body) {
    for (const b of body.breakers) {
      const cell = holder.querySelector(`[data-probe="${CSS.escape(b.name)}"]`);
      if (cell) cell.textContent = nextProbe(b);
    }
  }

  load();
  return () => {
    controller.abort();
    clearTimeout(timer);
  };
}

function nextProbe(b) {
  if (b.state === "open") {
    if (b.probe_in === null || b.probe_in === undefined) return "unknown";
    return b.probe_in <= 0 ? "due: the next call probes" : `in ${b.probe_in.toFixed(1)} s`;
  }
  if (b.state === "half_open") {
    return `probing (${b.probes_in_flight ?? 0} in flight, ${b.probe_successes ?? 0} ok)`;
  }
  return "–";
}
