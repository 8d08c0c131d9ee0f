// The run's and its tasks' statuses as of any event, folded in the page from the run's events,
// as flowweaver.domain.run.apply folds them (statuses, attempt numbers, a sub-workflow task's
// child run and a map task's element counts). Checkpoints every CHECKPOINT events keep any
// version within CHECKPOINT - 1 events of a fold.

const CHECKPOINT = 250;
const MAX_ELEMENTS = 10000; // flowweaver.domain.mapping.MAX_ELEMENTS
const TERMINAL = new Set(["completed", "failed", "skipped", "cancelled"]);
const MAP_EVENTS = new Set(["MapElementStarted", "MapElementCompleted", "MapElementFailed", "MapElementRetried"]);
export const FOLDED = new Set([
  "RunStarted", "RunForked", "RunQueued", "RunDequeued", "TaskScheduled", "TaskStarted",
  "ChildRunStarted", "TaskCompleted", "TaskFailed", "TaskRetried", "TaskSkipped", "SignalReceived",
  ...MAP_EVENTS, "RunPaused", "RunResumed", "RunCancelRequested", "RunCancelled", "RunCompleted",
  "RunFailed",
]);

// `$.a.b`, `$['a']`, `$.a[0]`: the paths whose value the page can select; others (wildcards,
// filters) leave the element count to the server.
function pathKeys(path) {
  const keys = [];
  const re = /\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]|\["([^"]*)"\]/y;
  re.lastIndex = 1;
  if (path[0] !== "$") return null;
  while (re.lastIndex < path.length) {
    const m = re.exec(path);
    if (!m) return null;
    keys.push(m[2] !== undefined ? Number(m[2]) : m[1] ?? m[3] ?? m[4]);
  }
  return keys;
}

function select(keys, doc) {
  let node = doc;
  for (const k of keys) {
    const ok = typeof k === "number" ? Array.isArray(node) && k < node.length
      : node !== null && typeof node === "object" && !Array.isArray(node) && k in node;
    if (!ok) return undefined;
    node = node[k];
  }
  return node;
}

export class StatusFold {
  /** `tasks`: the definition's tasks, in order ({id, wait, map}; or bare ids). */
  constructor(tasks) {
    const specs = tasks.map((t) => (typeof t === "string" ? {id: t} : t));
    this.ids = specs.map((t) => t.id);
    this.waits = specs.map((t) => Boolean(t.wait));
    this.maps = specs.map((t) => (t.map ? pathKeys(t.map) : undefined)); // null: not selectable
    this.index = new Map(this.ids.map((id, i) => [id, i]));
    this.events = [];
    this.checkpoints = [this.blank()];
    this.head = this.blank();
    this.unknownFrom = Infinity; // the first version of a type (or path) this fold does not know
  }

  blank() {
    const n = this.ids.length;
    return {version: 0, run: "pending", cancelRequested: false, statuses: this.ids.map(() => "pending"),
      attempts: new Array(n).fill(0), child: new Array(n).fill(null), elements: new Array(n).fill(null)};
  }

  copy(s) {
    return {version: s.version, run: s.run, cancelRequested: s.cancelRequested,
      statuses: s.statuses.slice(), attempts: s.attempts.slice(), child: s.child.slice(),
      elements: s.elements.map((p) => (p ? {...p, el: p.el.slice()} : null))};
  }

  /** Append the run's next event (its version must be the next). */
  push(event) {
    this.events.push(event);
    const i = this.index.get(event.taskId);
    if (!FOLDED.has(event.type) || (event.type === "TaskScheduled" && this.maps[i] === null)) {
      this.unknownFrom = Math.min(this.unknownFrom, event.version);
    }
    this.apply(this.head, event);
    if (this.head.version % CHECKPOINT === 0) this.checkpoints.push(this.copy(this.head));
  }

  /** Whether the fold knows every event up to `n`. */
  knows(n) { return n < this.unknownFrom; }

  /** The state right after event `n`: {version, run, statuses, attempts, child, elements}. */
  at(n) {
    if (n === this.head.version) return this.head;
    const base = this.copy(this.checkpoints[Math.floor(n / CHECKPOINT)]);
    for (let v = base.version + 1; v <= n; v++) this.apply(base, this.events[v - 1]);
    return base;
  }

  scheduled(s, i, attempt) {
    s.statuses[i] = this.waits[i] ? "waiting" : "scheduled";
    s.attempts[i] = attempt;
  }

  apply(s, e) {
    s.version = e.version;
    const i = e.taskId !== undefined ? this.index.get(e.taskId) : undefined;
    switch (e.type) {
      case "RunStarted":
      case "RunForked": {
        s.run = "running";
        const carried = e.carried || {};
        this.ids.forEach((id, k) => {
          s.statuses[k] = id in carried ? "completed" : "pending";
          s.attempts[k] = 0;
        });
        break;
      }
      case "RunQueued": s.run = "queued"; break;
      case "RunDequeued": s.run = "running"; break;
      case "TaskScheduled": {
        this.scheduled(s, i, e.attempt);
        const keys = this.maps[i];
        if (keys) {
          const items = select(keys, e.inputs || {});
          s.elements[i] = Array.isArray(items) && items.length <= MAX_ELEMENTS ? progress(items.length) : null;
        }
        break;
      }
      case "TaskStarted": s.statuses[i] = "running"; break;
      case "ChildRunStarted": s.statuses[i] = "running"; s.child[i] = e.childRunId; break;
      case "TaskCompleted": s.statuses[i] = "completed"; break;
      case "TaskFailed": s.statuses[i] = e.retryAt ? "waiting_retry" : "failed"; break;
      case "TaskRetried": {
        this.scheduled(s, i, e.attempt);
        const p = s.elements[i];
        if (p) { // every element not completed runs again
          p.el = p.el.map((st) => (st === "completed" ? st : "scheduled"));
          p.failed = 0;
          p.running = 0;
          p.firstFailed = null;
        } else if (this.maps[i]) {
          const items = select(this.maps[i], this.lastInputs(e.version, e.taskId));
          s.elements[i] = Array.isArray(items) && items.length <= MAX_ELEMENTS ? progress(items.length) : null;
        }
        break;
      }
      case "TaskSkipped": s.statuses[i] = "skipped"; break;
      case "MapElementStarted":
      case "MapElementCompleted":
      case "MapElementFailed":
      case "MapElementRetried": this.element(s, i, e); break;
      case "RunPaused": s.run = "paused"; break;
      case "RunResumed": s.run = "running"; break;
      case "RunCancelRequested":
        s.cancelRequested = true;
        s.statuses.forEach((st, k) => {
          if (st === "pending" || st === "scheduled" || st === "waiting" || st === "waiting_retry") s.statuses[k] = "cancelled";
        });
        s.elements.forEach((p, k) => {
          if (!p || s.statuses[k] !== "running") return;
          cancelIdle(p);
          if (p.running === 0) s.statuses[k] = "cancelled";
        });
        break;
      case "RunCancelled":
        s.run = "cancelled";
        s.statuses.forEach((st, k) => { if (!TERMINAL.has(st)) s.statuses[k] = "cancelled"; });
        break;
      case "RunCompleted": s.run = "completed"; break;
      case "RunFailed": s.run = "failed"; break;
      default: break;
    }
  }

  /** One element event of a map task, as flowweaver.domain.mapping.apply_element folds it. */
  element(s, i, e) {
    const p = s.elements[i];
    if (!p) return;
    const was = p.el[e.index];
    if (was === "running" && e.type !== "MapElementStarted") p.running--;
    if (e.type === "MapElementStarted") {
      p.el[e.index] = "running";
      p.running++;
      if (s.statuses[i] === "scheduled") s.statuses[i] = "running";
    } else if (e.type === "MapElementCompleted") {
      p.el[e.index] = "completed";
      p.completed++;
    } else if (e.type === "MapElementFailed") {
      if (e.retryAt) {
        p.el[e.index] = "waiting_retry";
      } else {
        p.el[e.index] = "failed";
        p.failed++;
        if (p.firstFailed === null) { p.firstFailed = e.index; cancelIdle(p); }
      }
    } else {
      p.el[e.index] = "scheduled";
    }
    if (s.cancelRequested && p.running === 0 && s.statuses[i] === "running") s.statuses[i] = "cancelled";
  }

  /** The inputs of the task's latest TaskScheduled before `version`. */
  lastInputs(version, taskId) {
    for (let v = version - 1; v >= 1; v--) {
      const e = this.events[v - 1];
      if (e.type === "TaskScheduled" && e.taskId === taskId) return e.inputs || {};
    }
    return {};
  }

  /** The tasks as dag.update takes them ({id, status, attempts, childRunId, elements}). */
  tasks(s) {
    return this.ids.map((id, k) => ({id, status: s.statuses[k], attempts: s.attempts[k],
      childRunId: s.child[k], elements: s.elements[k] && counts(s.elements[k])}));
  }
}

function progress(total) {
  return {total, completed: 0, failed: 0, running: 0, firstFailed: null, el: new Array(total).fill("scheduled")};
}

function cancelIdle(p) {
  p.el.forEach((st, k) => { if (st === "scheduled" || st === "waiting_retry") p.el[k] = "cancelled"; });
}

/** A map task's element counts, as the server's `elements` ({total, completed, ...}). */
function counts(p) {
  let waiting = 0;
  let cancelled = 0;
  for (const st of p.el) {
    if (st === "waiting_retry") waiting++;
    else if (st === "cancelled") cancelled++;
  }
  return {total: p.total, completed: p.completed, failed: p.failed, running: p.running,
    waitingRetry: waiting, cancelled};
}
