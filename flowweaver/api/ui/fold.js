// The run's and its tasks' statuses as of any event, folded in the page from the run's events,
// as flowweaver.domain.run.apply folds them (statuses and attempt numbers only). Checkpoints
// every CHECKPOINT events keep any version within CHECKPOINT - 1 events of a fold.

const CHECKPOINT = 250;
const OPEN = new Set(["pending", "scheduled", "running", "waiting_retry"]);
export const FOLDED = new Set([
  "RunStarted", "RunForked", "TaskScheduled", "TaskStarted", "TaskCompleted", "TaskFailed",
  "TaskRetried", "TaskSkipped", "RunPaused", "RunResumed", "RunCancelRequested",
  "RunCancelled", "RunCompleted", "RunFailed",
]);

export class StatusFold {
  /** `taskIds`: the definition's tasks, in order. */
  constructor(taskIds) {
    this.ids = taskIds;
    this.index = new Map(taskIds.map((id, i) => [id, i]));
    this.events = [];
    this.checkpoints = [this.blank()];
    this.head = this.blank();
    this.unknownFrom = Infinity; // the first version of a type this fold does not know
  }

  blank() {
    return {version: 0, run: "pending", statuses: this.ids.map(() => "pending"),
      attempts: this.ids.map(() => 0)};
  }

  copy(s) {
    return {version: s.version, run: s.run, statuses: s.statuses.slice(), attempts: s.attempts.slice()};
  }

  /** Append the run's next event (its version must be the next). */
  push(event) {
    this.events.push(event);
    if (!FOLDED.has(event.type)) this.unknownFrom = Math.min(this.unknownFrom, event.version);
    this.apply(this.head, event);
    if (this.head.version % CHECKPOINT === 0) this.checkpoints.push(this.copy(this.head));
  }

  /** Whether the fold knows every event up to `n`. */
  knows(n) { return n < this.unknownFrom; }

  /** The state right after event `n`: {version, run, statuses, attempts}. */
  at(n) {
    if (n === this.head.version) return this.head;
    const base = this.copy(this.checkpoints[Math.floor(n / CHECKPOINT)]);
    for (let v = base.version + 1; v <= n; v++) this.apply(base, this.events[v - 1]);
    return base;
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
      case "TaskScheduled": s.statuses[i] = "scheduled"; s.attempts[i] = e.attempt; break;
      case "TaskStarted": s.statuses[i] = "running"; break;
      case "TaskCompleted": s.statuses[i] = "completed"; break;
      case "TaskFailed": s.statuses[i] = e.retryAt ? "waiting_retry" : "failed"; break;
      case "TaskRetried": s.statuses[i] = "scheduled"; s.attempts[i] = e.attempt; break;
      case "TaskSkipped": s.statuses[i] = "skipped"; break;
      case "RunPaused": s.run = "paused"; break;
      case "RunResumed": s.run = "running"; break;
      case "RunCancelRequested":
        s.statuses.forEach((st, k) => {
          if (st === "pending" || st === "scheduled" || st === "waiting_retry") s.statuses[k] = "cancelled";
        });
        break;
      case "RunCancelled":
        s.run = "cancelled";
        s.statuses.forEach((st, k) => { if (OPEN.has(st)) s.statuses[k] = "cancelled"; });
        break;
      case "RunCompleted": s.run = "completed"; break;
      case "RunFailed": s.run = "failed"; break;
      default: break;
    }
  }

  /** The tasks as dag.update takes them. */
  tasks(s) {
    return this.ids.map((id, k) => ({id, status: s.statuses[k], attempts: s.attempts[k]}));
  }
}
