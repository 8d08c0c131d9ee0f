// A run: its DAG, a scrubber over its events, the timeline of attempts, the event list, task
// detail (traceback and logs), diff, lineage and the operator actions the role allows.
import {api, el, fmtDuration, fmtTime, follow, json, notice, roleAllows, statusBadge} from "./lib.js";
import {drawDag} from "./dag.js";
import {StatusFold} from "./fold.js";
import {ask} from "./dialog.js";
import {session} from "./app.js";

const TERMINAL = new Set(["RunCompleted", "RunFailed", "RunCancelled"]);
const EVENT_WINDOW = 80; // events listed before the scrubber's position
const TIMELINE_ROWS = 100;
const TIMELINE_DELAY = 60; // ms the scrubber rests before the timeline is redrawn
const DETAIL_DELAY = 120; // ms the scrubber rests before the task detail is fetched

async function allEvents(id) {
  const events = [];
  let after = 0;
  for (;;) {
    const page = await api(`/runs/${id}/events?after=${after}&limit=1000`);
    events.push(...page.events);
    if (page.nextAfter === null) return events;
    after = page.nextAfter;
  }
}

export async function runPage(main, id, query) {
  const [first, events, lineage] = await Promise.all([
    api(`/runs/${id}`), allEvents(id), api(`/runs/${id}/lineage`),
  ]);
  const runId = first.id;
  const definition = (events[0] && events[0].definition) || {tasks: first.tasks.map((t) => ({id: t.id}))};
  const operator = roleAllows(session.role, "operator");
  let state = first;
  let shownAt = 0;
  let live = !query.get("at");
  let selected = query.get("task") || null;
  let ended = events.some((e) => TERMINAL.has(e.type));

  // --- header and run actions ------------------------------------------------------------
  const statusCell = el("span", {id: "run-status"});
  const who = el("span", {class: "who-did"});
  const runActions = el("div", {class: "actions", role: "toolbar", "aria-label": "Run actions"});
  const header = el("section", {class: "run-head", "aria-labelledby": "run-title"},
    el("h1", {id: "run-title"}, "Run ", el("span", {class: "mono"}, runId)),
    el("p", {},
      "Workflow ", el("a", {href: `#/workflows/${encodeURIComponent(first.workflowId)}?version=${first.workflowVersion}`}, `${first.workflowId} v${first.workflowVersion}`),
      " · status ", statusCell, " · submitted by ", first.submittedBy || "?", " ", who),
    runActions);

  // --- scrubber ----------------------------------------------------------------------------
  const slider = el("input", {type: "range", id: "scrubber", min: 1, max: events.length,
    value: events.length, step: 1, "aria-label": "Event shown (arrow keys step one event)",
    "aria-describedby": "scrub-label"});
  const scrubLabel = el("span", {id: "scrub-label", role: "status", "aria-live": "polite"});
  const liveButton = el("button", {type: "button", id: "live", "aria-pressed": String(live)}, "Live");
  const stepBack = el("button", {type: "button", id: "step-back", "aria-label": "Previous event"}, "◀");
  const stepNext = el("button", {type: "button", id: "step-next", "aria-label": "Next event"}, "▶");
  const scrubber = el("section", {class: "scrubber", "aria-label": "Time travel"},
    el("label", {for: "scrubber"}, "Event"), stepBack, slider, stepNext, liveButton, scrubLabel);

  // --- DAG, task detail, timeline, events, diff, lineage -----------------------------------
  const dag = drawDag(definition.tasks, {onSelect: (t) => selectTask(t), label: "Run graph: tasks and their states"});
  const detail = el("section", {class: "detail", id: "task-detail", "aria-label": "Task detail"},
    el("p", {class: "help"}, "Select a task in the graph (Tab, then Enter) to see its detail."));
  const timeline = el("section", {class: "timeline", id: "timeline", "aria-label": "Timeline of attempts"});
  const eventList = el("ol", {class: "events", id: "events", "aria-label": "Events up to the one shown"});
  const diffBox = diffSection(runId, () => shownAt);
  const lineageBox = lineageSection(lineage, first);

  main.replaceChildren(header, scrubber,
    el("div", {class: "run-body"},
      el("section", {class: "graph", "aria-label": "Graph"}, el("h2", {}, "Graph"),
        el("div", {class: "dag-scroll"}, dag.element)),
      detail),
    el("h2", {}, "Timeline"), timeline,
    el("div", {class: "two"},
      el("section", {"aria-labelledby": "events-title"}, el("h2", {id: "events-title"}, "Events"), eventList),
      el("div", {}, diffBox, lineageBox)));

  // --- showing the state at event N ---------------------------------------------------------
  // The DAG, the run's status, the timeline and the event list come from the events in the
  // page (StatusFold: a step costs one event folded, a jump at most 249); the task detail and
  // the run's other fields from GET /runs/{id}?at=N, newest wish first. Events of a type the
  // fold does not know make the page use the server's state for everything.
  const fold = new StatusFold(definition.tasks);
  for (const e of events) fold.push(e);
  let wanted = 0;
  let inFlight = false;
  let detailAt = 0;
  function show(n) {
    const began = performance.now();
    shownAt = n;
    wanted = n;
    if (fold.knows(n)) {
      const local = fold.at(n);
      dag.update(fold.tasks(local));
      statusCell.replaceChildren(statusBadge(local.run));
      runStatus = local.run;
      renderFrame();
      main.dataset.shownAt = String(n);
      main.dataset.folded = "true"; // shown from the page's fold, not from ?at=N
      main.dataset.renderMs = String(Math.round((performance.now() - began) * 10) / 10);
      // After the next frame is laid out and painted: what a user waits for.
      requestAnimationFrame(() => setTimeout(() => {
        main.dataset.paintMs = String(Math.round((performance.now() - began) * 10) / 10);
        main.dataset.paintedAt = String(n);
      }, 0));
    }
    clearTimeout(detailTimer);
    if (live || !fold.knows(n)) fetchDetail();
    else detailTimer = setTimeout(fetchDetail, DETAIL_DELAY); // while the scrubber moves
  }
  let detailTimer = null;
  let runStatus = first.status;

  async function fetchDetail() {
    if (inFlight) return; // the fetch in flight fetches `wanted` again when it returns
    inFlight = true;
    try {
      while (wanted !== detailAt) {
        const at = wanted;
        const began = performance.now();
        const next = await api(`/runs/${runId}?at=${at}`);
        if (at !== wanted) continue; // superseded: fetch the newest wish
        state = next;
        detailAt = at;
        if (!fold.knows(at)) {
          dag.update(state.tasks);
          statusCell.replaceChildren(statusBadge(state.status));
          runStatus = state.status;
          renderFrame();
          main.dataset.shownAt = String(at);
          main.dataset.folded = "false";
        }
        who.textContent = state.pausedBy ? `· paused by ${state.pausedBy}: ${state.pauseReason || ""}`
          : state.cancelBy ? `· cancel asked by ${state.cancelBy}: ${state.cancelReason || ""}` : "";
        renderActions();
        renderDetail();
        main.dataset.detailAt = String(at);
        main.dataset.detailMs = String(Math.round(performance.now() - began));
      }
    } catch (err) {
      notice(`Could not read the run at event ${wanted}: ${err.message}`, "error");
    } finally {
      inFlight = false;
    }
  }

  function renderFrame() {
    const event = events[shownAt - 1];
    scrubLabel.textContent = `${shownAt} of ${events.length}: ${event ? event.type : ""}${event && event.taskId ? ` ${event.taskId}` : ""} at ${event ? fmtTime(event.timestamp) : ""}${live ? " (live)" : ""}`;
    slider.value = String(shownAt);
    slider.setAttribute("aria-valuetext", `event ${shownAt} of ${events.length}`);
    renderEvents();
    // The timeline (up to 100 rows of bars) is redrawn once the scrubber rests.
    clearTimeout(timelineTimer);
    timelineTimer = setTimeout(renderTimeline, live ? 0 : TIMELINE_DELAY);
  }
  let timelineTimer = null;

  // --- operator actions --------------------------------------------------------------------
  async function act(label, path, fields = [], extra = () => ({})) {
    await ask(label, fields, async ({reason, values}) => {
      const body = {...extra(values), reason};
      const answer = await api(path, {method: "POST", body});
      if (path.endsWith("/fork")) {
        notice(`Forked: run ${answer.id}`);
        location.hash = `#/run/${answer.id}`;
      } else {
        notice(`${label}: recorded as ${session.name}`);
      }
    });
  }
  function renderActions() {
    runActions.replaceChildren();
    if (!operator) return;
    const s = runStatus;
    const base = `/runs/${runId}`;
    const button = (text, onclick, enabled = true) =>
      el("button", {type: "button", onclick, disabled: !enabled, "data-action": text.toLowerCase()}, text);
    runActions.append(
      button("Pause", () => act("Pause the run", `${base}/pause`), live && s === "running"),
      button("Resume", () => act("Resume the run", `${base}/resume`), live && s === "paused"),
      button("Cancel", () => act("Cancel the run", `${base}/cancel`),
        live && !["completed", "failed", "cancelled"].includes(s)),
      button("Fork", () => act("Fork the run", `${base}/fork`, [
        {name: "atVersion", label: "From event", type: "number", min: 1, max: events.length, value: String(shownAt)},
        {name: "reset", label: "Tasks to run again (comma-separated; empty: those not completed)", value: ""},
        {name: "parameters", label: "Parameters (JSON)", multiline: true, value: json(state.parameters ?? {})},
        {name: "outputs", label: "Outputs to replace (JSON: task id to output)", multiline: true, value: "{}"},
      ], forkBody)));
  }
  function forkBody(values) {
    const body = {atVersion: Number(values.atVersion)};
    const reset = values.reset.split(",").map((s) => s.trim()).filter(Boolean);
    if (reset.length) body.reset = reset;
    body.parameters = parseJson(values.parameters, "Parameters");
    const outputs = parseJson(values.outputs || "{}", "Outputs");
    if (Object.keys(outputs).length) body.outputs = outputs;
    return body;
  }

  // --- task detail ------------------------------------------------------------------------------
  function selectTask(taskId) {
    selected = taskId;
    dag.select(taskId);
    renderDetail();
    detail.focus?.();
  }
  function renderDetail() {
    if (!selected) return;
    const task = state.tasks.find((t) => t.id === selected);
    if (!task) return;
    const rows = [
      ["Status", statusBadge(task.status)], ["Attempts", String(task.attempts)],
      ["Scheduled", fmtTime(task.scheduledAt)], ["Started", fmtTime(task.startedAt)],
      ["Completed", fmtTime(task.completedAt)], ["Retry at", fmtTime(task.retryAt)],
      ["Worker", task.worker || ""],
    ];
    if (task.childRunId) rows.push(["Child run", el("a", {href: `#/run/${task.childRunId}`, class: "mono", id: "child-run"}, task.childRunId)]);
    const m = task.elements;
    if (m) rows.push(["Elements", `${m.completed} of ${m.total} completed, ${m.running} running, ${m.failed} failed, ${m.waitingRetry} waiting to retry, ${m.cancelled} cancelled`]);
    const parts = [el("h2", {id: "task-title"}, "Task ", el("span", {class: "mono"}, task.id)),
      el("dl", {}, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))];
    if (operator && live) {
      const base = `/runs/${runId}/tasks/${encodeURIComponent(task.id)}`;
      parts.push(el("div", {class: "actions", role: "toolbar", "aria-label": `Actions on task ${task.id}`},
        el("button", {type: "button", "data-action": "retry", onclick: () => act(`Retry ${task.id}`, `${base}/retry`),
          disabled: !(task.status === "waiting_retry" || (task.status === "failed" && state.status === "paused"))}, "Retry"),
        el("button", {type: "button", "data-action": "skip", onclick: () => act(`Skip ${task.id}`, `${base}/skip`),
          disabled: ["completed", "running", "skipped", "cancelled"].includes(task.status)}, "Skip"),
        el("button", {type: "button", "data-action": "complete",
          onclick: () => act(`Complete ${task.id} by hand`, `${base}/complete`,
            [{name: "output", label: "Output (JSON)", multiline: true, value: "{}", required: true}],
            (v) => ({output: parseJson(v.output, "Output")})),
          disabled: ["completed", "running", "cancelled"].includes(task.status)}, "Complete")));
    }
    if (task.lastError) {
      parts.push(el("h3", {}, "Failure"),
        el("p", {class: "error-line"}, `${task.lastError.type}: ${task.lastError.message}`,
          task.lastError.retryable ? " (retryable)" : ""),
        task.lastError.traceback
          ? el("pre", {class: "traceback", id: "traceback", tabindex: 0, "aria-label": "Traceback"}, task.lastError.traceback)
          : el("p", {class: "help"}, "No traceback: the attempt timed out, was interrupted or ran no handler code."));
    }
    parts.push(el("h3", {}, `Logs of attempt ${task.attempts}`));
    if (task.logs && task.logs.length) {
      parts.push(el("table", {class: "logs", id: "logs"}, el("thead", {}, el("tr", {},
        el("th", {scope: "col"}, "Time"), el("th", {scope: "col"}, "Level"),
        el("th", {scope: "col"}, "Message"), el("th", {scope: "col"}, "Fields"))),
      el("tbody", {}, task.logs.map((l) => el("tr", {class: `level-${l.level}`},
        el("td", {}, fmtTime(l.timestamp)), el("td", {}, l.level), el("td", {}, l.message),
        el("td", {class: "mono"}, Object.keys(l.fields || {}).length ? JSON.stringify(l.fields) : ""))))));
    } else {
      parts.push(el("p", {class: "help"}, "Nothing logged."));
    }
    if (task.inputs !== undefined && task.inputs !== null) parts.push(el("h3", {}, "Inputs"), el("pre", {}, json(task.inputs)));
    if (task.output !== null && task.output !== undefined) parts.push(el("h3", {}, "Output"), el("pre", {}, json(task.output)));
    detail.replaceChildren(...parts);
  }

  // --- timeline of attempts, from the events up to N ------------------------------------------
  // Each task's attempts, indexed once as events arrive: {attempt, startV, start, endV, end,
  // outcome, error}. At event N an attempt shows if it started by N, ended if it ended by N.
  const attemptsOf = new Map();
  function indexAttempt(e) {
    if (e.taskId === undefined) return;
    let list = attemptsOf.get(e.taskId);
    if (!list) attemptsOf.set(e.taskId, (list = []));
    const at = Date.parse(e.timestamp);
    if (e.type === "TaskStarted") {
      list.push({attempt: e.attempt, startV: e.version, start: at, endV: Infinity, end: at, outcome: "running"});
    } else if (e.type === "TaskCompleted" || e.type === "TaskFailed") {
      const outcome = e.type === "TaskCompleted" ? "completed" : "failed";
      const open = list.find((x) => x.attempt === e.attempt && x.endV === Infinity);
      if (open) Object.assign(open, {endV: e.version, end: at, outcome, error: e.error?.message});
      else list.push({attempt: e.attempt, startV: e.version, start: at, endV: e.version, end: at, outcome, byHand: e.attempt === 0});
    }
  }
  for (const e of events) indexAttempt(e);

  function renderTimeline() {
    if (!shownAt) { timeline.replaceChildren(); return; }
    const t0 = Date.parse(events[0].timestamp);
    const t1 = Math.max(Date.parse(events[shownAt - 1].timestamp), t0 + 1);
    const span = t1 - t0;
    const order = [];
    let started = 0;
    for (const t of definition.tasks) {
      const list = attemptsOf.get(t.id);
      if (!list || !list.length || list[0].startV > shownAt) continue;
      started++;
      if (t.id === selected) order.unshift(t.id);
      else if (order.length < TIMELINE_ROWS) order.push(t.id);
    }
    const rows = order.slice(0, TIMELINE_ROWS).map((taskId) => {
      const bars = [];
      for (const a of attemptsOf.get(taskId)) {
        if (a.startV > shownAt) break;
        const ended = a.endV <= shownAt;
        const outcome = ended ? a.outcome : "running";
        const end = ended ? a.end : t1;
        const text = a.byHand ? "completed by hand"
          : `attempt ${a.attempt}: ${outcome}, ${fmtDuration(end - a.start)}${ended && a.error ? ` (${a.error})` : ""}`;
        const bar = el("span", {class: `bar o-${outcome}`, title: `${taskId} ${text}`, role: "img", "aria-label": text});
        bar.style.left = `${((a.start - t0) / span) * 100}%`;
        bar.style.width = `max(3px, ${((end - a.start) / span) * 100}%)`;
        bars.push(bar);
      }
      return el("div", {class: "tl-row"}, el("span", {class: "tl-name mono"}, taskId), el("span", {class: "tl-track"}, bars));
    });
    const more = started > TIMELINE_ROWS ? el("p", {class: "help"}, `${started - TIMELINE_ROWS} more tasks: select one to see its attempts.`) : "";
    timeline.replaceChildren(el("p", {class: "help"}, `From ${fmtTime(events[0].timestamp)} to ${fmtTime(events[shownAt - 1].timestamp)} (${fmtDuration(span)})`), ...rows, more);
  }

  // --- the event list: a window around N ----------------------------------------------------------
  function renderEvents() {
    const from = Math.max(0, shownAt - EVENT_WINDOW);
    const to = Math.min(events.length, shownAt + 10);
    const items = [];
    if (from > 0) items.push(el("li", {class: "help"}, `${from} earlier events`));
    for (let i = from; i < to; i++) {
      const e = events[i];
      const current = e.version === shownAt;
      items.push(el("li", {class: `${current ? "current" : ""} ${e.version > shownAt ? "future" : ""}`, "data-version": e.version, "aria-current": current ? "step" : null},
        el("details", {ontoggle: (ev) => {
          const box = ev.currentTarget;
          if (box.open && !box.querySelector("pre")) {
            box.append(el("pre", {class: "event-json"}, json(e)),
              el("button", {type: "button", onclick: () => scrubTo(e.version)}, `Show the run at event ${e.version}`));
          }
        }},
          el("summary", {}, el("span", {class: "ver"}, `#${e.version}`), " ", e.type,
            e.taskId ? ` ${e.taskId}` : "", e.attempt !== undefined ? ` (attempt ${e.attempt})` : "",
            e.by ? ` by ${e.by}` : "", e.reason ? `: ${e.reason}` : ""))));
    }
    if (to < events.length) items.push(el("li", {class: "help"}, `${events.length - to} later events`));
    eventList.replaceChildren(...items);
  }

  // --- scrubber wiring, live feed -------------------------------------------------------------------
  function setLive(on) {
    live = on;
    liveButton.setAttribute("aria-pressed", String(on));
    liveButton.classList.toggle("on", on);
  }
  function scrubTo(n) {
    const v = Math.min(Math.max(1, n), events.length);
    setLive(v === events.length && !ended ? live : false);
    slider.value = String(v);
    show(v);
  }
  slider.addEventListener("input", () => { setLive(false); show(Number(slider.value)); });
  stepBack.addEventListener("click", () => scrubTo(shownAt - 1));
  stepNext.addEventListener("click", () => scrubTo(shownAt + 1));
  liveButton.addEventListener("click", () => { setLive(true); show(events.length); });
  setLive(live);

  const feed = follow(`/events/${runId}`, {
    after: events.length,
    ends: () => ended,
    onEvent: (event) => {
      if (event.version !== events.length + 1) return; // a resumed stream never skips; be safe
      events.push(event);
      fold.push(event);
      indexAttempt(event);
      if (TERMINAL.has(event.type)) ended = true;
      slider.max = String(events.length);
      if (live) show(events.length);
      else scrubLabel.textContent = scrubLabel.textContent.replace(/of \d+/, `of ${events.length}`);
    },
  });

  const at = Number(query.get("at")) || events.length;
  show(Math.min(at, events.length));
  if (selected) selectTask(selected);
  return () => feed.close();
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what} is not JSON`);
  }
}

function diffSection(runId, current) {
  const from = el("input", {id: "diff-from", type: "number", min: 0, value: 0, "aria-label": "Diff from event"});
  const to = el("input", {id: "diff-to", type: "number", min: 0, placeholder: "shown", "aria-label": "Diff to event (empty: the one shown)"});
  const out = el("div", {id: "diff-out", "aria-live": "polite"});
  const run = el("button", {type: "button", id: "diff-run"}, "Compare");
  const useCurrent = el("button", {type: "button", onclick: () => { to.value = String(current()); }}, "To = shown");
  run.addEventListener("click", async () => {
    try {
      const upTo = to.value === "" ? current() : Number(to.value);
      const d = await api(`/runs/${runId}/diff?from=${Number(from.value)}&to=${upTo}`);
      const rows = [];
      for (const [field, [a, b]] of Object.entries(d.run)) rows.push(["run", field, a, b]);
      for (const [task, fields] of Object.entries(d.tasks)) {
        for (const [field, [a, b]] of Object.entries(fields)) rows.push([task, field, a, b]);
      }
      const short = (v) => { const s = JSON.stringify(v); return s && s.length > 120 ? `${s.slice(0, 119)}…` : s; };
      out.replaceChildren(
        el("p", {}, `${d.eventCount} events between ${d.from} and ${d.to}; ${rows.length} fields changed.`),
        el("table", {class: "diff"}, el("thead", {}, el("tr", {}, ["What", "Field", "Before", "After"].map((h) => el("th", {scope: "col"}, h)))),
          el("tbody", {}, rows.map(([w, f, a, b]) => el("tr", {}, el("td", {class: "mono"}, w), el("td", {}, f),
            el("td", {class: "mono old"}, short(a)), el("td", {class: "mono new"}, short(b)))))));
    } catch (err) {
      out.replaceChildren(el("p", {class: "error", role: "alert"}, err.message));
    }
  });
  return el("section", {class: "diff-box", "aria-labelledby": "diff-title"},
    el("h2", {id: "diff-title"}, "Diff"),
    el("div", {class: "toolbar"}, el("label", {for: "diff-from"}, "From"), from,
      el("label", {for: "diff-to"}, "to"), to, useCurrent, run),
    out);
}

function lineageSection(lineage, run) {
  const link = (id, text) => el("a", {href: `#/run/${id}`, class: "mono"}, text || id);
  return el("section", {class: "lineage", id: "lineage", "aria-labelledby": "lineage-title"},
    el("h2", {id: "lineage-title"}, "Lineage"),
    el("p", {}, "Parent: ", lineage.parent
      ? [link(lineage.parent.runId), ` at event ${lineage.parent.atVersion}`] : "none (started, not forked)"),
    el("p", {}, `Forks (${lineage.children.length}${lineage.nextCursor ? "+" : ""}):`),
    el("ul", {}, lineage.children.map((c) => el("li", {}, link(c.runId), ` from event ${c.atVersion}, `,
      c.status ? statusBadge(c.status) : "", ` ${fmtTime(c.createdAt)}`))),
    run.parentRunId && !lineage.parent ? el("p", {}, "Forked from ", link(run.parentRunId)) : null);
}
