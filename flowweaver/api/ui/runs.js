// The runs page: filter by workflow and status, paged, live through the global event feed.
import {api, el, fmtTime, follow, statusBadge} from "./lib.js";

const STATUSES = [
  "pending", "queued", "running", "paused", "completed", "failed", "cancelled",
];
/** The run-level events that change a run's status, and the status each leaves it in. */
const RUN_STATUS = {
  RunStarted: "running", RunForked: "running", RunPaused: "paused", RunResumed: "running",
  RunQueued: "queued", RunDequeued: "running",
  RunCancelled: "cancelled", RunCompleted: "completed", RunFailed: "failed",
};
const PAGE = 25;

export async function runsPage(main, query) {
  const workflowId = query.get("workflowId") || "";
  const status = query.get("status") || "";
  const cursor = query.get("cursor") || "";
  // The log's position first, then the page: what happens after the position comes live.
  const position = (await api("/auth/whoami")).logPosition;
  const params = new URLSearchParams({limit: String(PAGE)});
  if (workflowId) params.set("workflowId", workflowId);
  if (status) params.set("status", status);
  if (cursor) params.set("cursor", cursor);
  const [page, workflows] = await Promise.all([
    api(`/runs?${params}`), api("/workflows"),
  ]);

  const workflowSelect = el("select", {id: "f-workflow", name: "workflowId"},
    el("option", {value: ""}, "all workflows"),
    workflows.workflows.map((w) => el("option", {value: w.id, selected: w.id === workflowId}, w.id)));
  const statusSelect = el("select", {id: "f-status", name: "status"},
    el("option", {value: ""}, "any status"),
    STATUSES.map((s) => el("option", {value: s, selected: s === status}, s)));
  const apply = () => {
    const q = new URLSearchParams();
    if (workflowSelect.value) q.set("workflowId", workflowSelect.value);
    if (statusSelect.value) q.set("status", statusSelect.value);
    location.hash = `#/runs${q.size ? `?${q}` : ""}`;
  };
  workflowSelect.addEventListener("change", apply);
  statusSelect.addEventListener("change", apply);

  const live = el("span", {class: "live-state", id: "runs-live", role: "status"}, "connecting");
  const tbody = el("tbody", {id: "runs-body"});
  const rows = new Map();
  const rowFor = (run) => {
    const cells = {
      status: el("td", {class: "status"}, statusBadge(run.status)),
      updated: el("td", {}, fmtTime(run.updatedAt)),
    };
    const tr = el("tr", {"data-run": run.id, "data-status": run.status},
      el("td", {}, el("a", {href: `#/run/${run.id}`, class: "mono"}, run.id)),
      el("td", {}, run.workflowId, run.workflowVersion ? ` v${run.workflowVersion}` : ""),
      cells.status,
      el("td", {}, fmtTime(run.createdAt)),
      cells.updated,
      el("td", {}, run.parentRunId
        ? el("a", {href: `#/run/${run.parentRunId}`, "aria-label": "parent run"}, "fork")
        : ""));
    rows.set(run.id, {tr, cells, run});
    return tr;
  };
  for (const run of page.runs) tbody.append(rowFor(run));
  const empty = el("p", {class: "empty", hidden: page.runs.length > 0}, "No runs match.");

  // Both page links keep the filters: "Newest" is the first page of the same list.
  const filters = new URLSearchParams();
  if (workflowId) filters.set("workflowId", workflowId);
  if (status) filters.set("status", status);
  const newest = `#/runs${filters.size ? `?${filters}` : ""}`;
  const older = new URLSearchParams(filters);
  if (page.nextCursor) older.set("cursor", page.nextCursor);
  const next = page.nextCursor ? el("a", {href: `#/runs?${older}`, class: "button"}, "Older runs") : null;
  main.replaceChildren(
    el("h1", {}, "Runs"),
    el("div", {class: "toolbar", role: "search", "aria-label": "Filter runs"},
      el("label", {for: "f-workflow"}, "Workflow"), workflowSelect,
      el("label", {for: "f-status"}, "Status"), statusSelect,
      cursor ? el("a", {href: newest, class: "button"}, "Newest") : null,
      el("span", {class: "spacer"}), "Live: ", live),
    el("table", {class: "runs", "aria-label": "Runs, newest first"},
      el("thead", {}, el("tr", {},
        el("th", {scope: "col"}, "Run"), el("th", {scope: "col"}, "Workflow"),
        el("th", {scope: "col"}, "Status"), el("th", {scope: "col"}, "Created"),
        el("th", {scope: "col"}, "Updated"), el("th", {scope: "col"}, "Lineage"))),
      tbody),
    empty, next ?? "");

  const matches = (run) => (!workflowId || run.workflowId === workflowId)
    && (!status || run.status === status);
  const types = Object.keys(RUN_STATUS).join(",");
  const feed = follow(`/events?types=${types}`, {
    after: position,
    onState: (s) => { live.textContent = s; live.dataset.state = s; },
    onEvent: (event) => {
      const next = RUN_STATUS[event.type];
      if (!next) return;
      const known = rows.get(event.runId);
      if (known) {
        known.run.status = next;
        known.tr.dataset.status = next;
        known.cells.status.replaceChildren(statusBadge(next));
        known.cells.updated.textContent = fmtTime(event.timestamp);
        return;
      }
      if (cursor || (event.type !== "RunStarted" && event.type !== "RunForked")) return;
      const run = {id: event.runId, workflowId: event.workflowId,
        workflowVersion: event.workflowVersion, status: next, createdAt: event.timestamp,
        updatedAt: event.timestamp, parentRunId: event.parentRunId || null};
      if (!matches(run)) return;
      empty.hidden = true;
      tbody.prepend(rowFor(run));
    },
  });
  return () => feed.close();
}
