// Helpers shared by the pages: DOM building, the API client, live feeds.

/** Build an element: el("a", {href: "#/x", class: "c"}, "text", child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const SVG = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** Call the API on this origin; JSON in and out. Throws ApiError on a problem answer. */
export async function api(path, {method = "GET", body, signal} = {}) {
  const init = {method, signal, credentials: "same-origin", headers: {Accept: "application/json"}};
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, data);
  }
  return data;
}

/**
 * Follow an event stream (server-sent events) with resume. The stream is read with fetch, so
 * that every event is seen whatever its `event:` name, and resumed with the `Last-Event-ID`
 * header after a dropped connection or a server restart: `onEvent(data, id)` sees each event
 * once, in order (an id at or below the last one seen is dropped). A stream that ends is
 * reopened unless `ends()` says it is done. `onState` hears "live", "reconnecting", "ended".
 */
export function follow(path, {after = 0, onEvent, onState = () => {}, ends = () => false}) {
  let last = after;
  let stopped = false;
  let controller = null;
  let delay = 250;
  const deliver = (id, data) => {
    if (id !== null && id <= last) return;
    if (id !== null) last = id;
    onEvent(JSON.parse(data), id);
  };
  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch(path, {
          credentials: "same-origin", signal: controller.signal,
          headers: {Accept: "text/event-stream", "Last-Event-ID": String(last)},
        });
        if (response.status === 401) { onUnauthorized(); return; }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onState("live");
        delay = 250;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        let id = null;
        let data = [];
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.search(/\r\n|\r|\n/)) >= 0) {
            const line = buffer.slice(0, cut);
            buffer = buffer.slice(cut + (buffer.startsWith("\r\n", cut) ? 2 : 1));
            if (line === "") {
              if (data.length) deliver(id, data.join("\n"));
              id = null;
              data = [];
            } else if (line.startsWith("data:")) {
              data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
            } else if (line.startsWith("id:")) {
              id = Number(line.slice(3).trim());
            }
          }
        }
        if (ends()) { onState("ended"); return; }
      } catch (error) {
        if (stopped) return;
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 3000);
    }
  };
  run();
  return {
    get last() { return last; },
    close() { stopped = true; controller?.abort(); },
  };
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace("Z", "").slice(0, 23);
}

export function fmtDuration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function json(value) { return JSON.stringify(value, null, 2); }

export function statusBadge(status) {
  return el("span", {class: `badge s-${status}`}, status);
}

export function notice(text, kind = "info") {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = `notice ${kind}`;
  if (text) setTimeout(() => { if (box.textContent === text) box.textContent = ""; }, 8000);
}

/** Whether `role` may do what `needed` may (reader < submitter < operator < admin). */
export function roleAllows(role, needed) {
  const order = ["reader", "submitter", "operator", "admin"];
  return order.indexOf(role) >= order.indexOf(needed);
}
