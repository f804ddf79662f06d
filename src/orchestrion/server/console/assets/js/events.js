// A run's events, live: Server-Sent Events read with fetch() and a stream reader, not
// EventSource, because EventSource cannot send the Authorization header (and the key
// must not travel in a URL). Like EventSource, it reconnects after a network error and
// sends Last-Event-ID, so the server resumes after the last event seen: none is lost or
// repeated. It stops when the run's stream ends (after run.finished) or when aborted.

import { apiUrl, authHeaders, unauthorized } from "./api.js";

/**
 * Follow /v1/runs/{id}/events after seq `after`.
 * onEvent({id, type, data}) for each event; onState("connecting" | "live" |
 * "reconnecting" | "ended" | "gone"). Resolves when the stream is over.
 */
export async function followEvents(runId, { after = 0, onEvent, onState, signal }) {
  let last = after;
  let wait = 500;
  const url = apiUrl(`/v1/runs/${encodeURIComponent(runId)}/events`);
  while (!signal.aborted) {
    onState?.(last === after ? "connecting" : "reconnecting");
    try {
      const response = await fetch(url, {
        headers: authHeaders({ Accept: "text/event-stream", "Last-Event-ID": String(last) }),
        cache: "no-store",
        credentials: "omit",
        signal,
      });
      if (response.status === 401) return unauthorized();
      if (response.status === 404) return onState?.("gone");
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      onState?.("live");
      wait = 500;
      for await (const frame of frames(response.body)) {
        if (frame.id !== null) last = frame.id;
        if (frame.type === "error") throw new Error("the event stream failed");
        onEvent(frame);
      }
      return onState?.("ended"); // the server ends the stream once the run has ended
    } catch (error) {
      if (signal.aborted) return;
    }
    onState?.("reconnecting");
    await sleep(wait, signal);
    wait = Math.min(wait * 2, 10000);
  }
}

/** The frames of an SSE body (the text/event-stream format; comments skipped). */
async function* frames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let frame = { id: null, type: "message", data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop(); // an unfinished line waits for the next chunk
      for (const line of lines) {
        if (line === "") {
          if (frame.data.length) {
            yield { id: frame.id, type: frame.type, data: parse(frame.data.join("\n")) };
          }
          frame = { id: null, type: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (name === "data") frame.data.push(value);
        else if (name === "event") frame.type = value;
        else if (name === "id" && /^\d+$/.test(value)) frame.id = Number(value);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { text };
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

/** The text a text.delta event carries, and the step it belongs to. */
export function textOf(event) {
  const data = event.data ?? {};
  return {
    step: data.parent_span_id ?? data.step_span_id ?? "",
    text: data.attributes?.text ?? data.text ?? "",
  };
}
