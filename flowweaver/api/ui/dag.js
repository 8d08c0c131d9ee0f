// The DAG of a workflow, laid out in layers (longest path from a root) and drawn in SVG.
import {svg} from "./lib.js";

const NODE_W = 150;
const NODE_H = 40;
const GAP_X = 60;
const GAP_Y = 14;
const MAX_PER_COLUMN = 40; // a wide layer wraps into several columns

/** Lay `tasks` ([{id, dependencies}]) out: {positions: Map id -> {x, y}, width, height}. */
export function layout(tasks) {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const layer = new Map();
  // Longest-path layering over a topological order (Kahn), O(V + E).
  const indegree = new Map(tasks.map((t) => [t.id, 0]));
  const children = new Map(tasks.map((t) => [t.id, []]));
  for (const t of tasks) {
    for (const d of t.dependencies || []) {
      if (!byId.has(d)) continue;
      indegree.set(t.id, indegree.get(t.id) + 1);
      children.get(d).push(t.id);
    }
  }
  const queue = tasks.filter((t) => indegree.get(t.id) === 0).map((t) => t.id);
  for (const id of queue) layer.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const c of children.get(id)) {
      layer.set(c, Math.max(layer.get(c) ?? 0, layer.get(id) + 1));
      indegree.set(c, indegree.get(c) - 1);
      if (indegree.get(c) === 0) queue.push(c);
    }
  }
  const layers = [];
  for (const t of tasks) {
    const l = layer.get(t.id) ?? 0;
    (layers[l] ||= []).push(t.id);
  }
  // One barycentre sweep: order each layer by the mean row of its parents (fewer crossings).
  const row = new Map();
  layers.forEach((ids, l) => {
    if (l > 0) {
      const key = (id) => {
        const deps = (byId.get(id).dependencies || []).filter((d) => row.has(d));
        return deps.length ? deps.reduce((s, d) => s + row.get(d), 0) / deps.length : 0;
      };
      ids.sort((a, b) => key(a) - key(b));
    }
    ids.forEach((id, i) => row.set(id, i));
  });
  const positions = new Map();
  let column = 0;
  let height = 0;
  for (const ids of layers) {
    if (!ids) continue;
    const columns = Math.ceil(ids.length / MAX_PER_COLUMN);
    ids.forEach((id, i) => {
      const c = column + Math.floor(i / MAX_PER_COLUMN);
      const r = i % MAX_PER_COLUMN;
      positions.set(id, {x: 10 + c * (NODE_W + GAP_X), y: 10 + r * (NODE_H + GAP_Y)});
      height = Math.max(height, 10 + (r + 1) * (NODE_H + GAP_Y));
    });
    column += columns;
  }
  return {positions, width: 10 + column * (NODE_W + GAP_X), height: height + 10};
}

/**
 * Draw the DAG: the edges in one SVG path, each task an absolutely placed, focusable element
 * (layout and paint contained, so a change of state redraws that node alone). Return
 * {element, update(tasks), select(id), nodes}. Each node shows its id and its status as text,
 * coloured by status class; `onSelect(id)` runs on click, Enter or Space.
 */
export function drawDag(tasks, {onSelect = () => {}, label = "Workflow graph"} = {}) {
  const {positions, width, height} = layout(tasks);
  const root = document.createElement("div");
  root.className = "dag";
  root.setAttribute("role", "group");
  root.setAttribute("aria-label", label);
  root.style.width = `${width}px`;
  root.style.height = `${height}px`;
  const edges = svg("svg", {class: "edges", width, height, viewBox: `0 0 ${width} ${height}`, "aria-hidden": "true"});
  const parts = [];
  for (const t of tasks) {
    const to = positions.get(t.id);
    for (const d of t.dependencies || []) {
      const from = positions.get(d);
      if (!from) continue;
      const x1 = from.x + NODE_W;
      const y1 = from.y + NODE_H / 2;
      const x2 = to.x;
      const y2 = to.y + NODE_H / 2;
      const mx = (x1 + x2) / 2;
      parts.push(`M${x1},${y1}C${mx},${y1} ${mx},${y2} ${x2},${y2}`);
    }
  }
  if (parts.length) edges.append(svg("path", {d: parts.join("")}));
  root.append(edges);
  const nodes = new Map();
  const fragment = document.createDocumentFragment();
  for (const t of tasks) {
    const p = positions.get(t.id);
    const g = document.createElement("div");
    g.className = "node s-none";
    g.tabIndex = 0;
    g.setAttribute("role", "button");
    g.dataset.task = t.id;
    g.setAttribute("aria-label", `task ${t.id}`);
    g.title = t.id;
    g.style.left = `${p.x}px`;
    g.style.top = `${p.y}px`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = t.id;
    const status = document.createElement("span");
    status.className = "status";
    g.append(name, status);
    g.addEventListener("click", () => onSelect(t.id));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(t.id); }
    });
    nodes.set(t.id, {g, status, current: null, cls: "s-none"});
    fragment.append(g);
  }
  root.append(fragment);
  return {
    element: root,
    nodes,
    /** Show each task's status ([{id, status, attempts, elements}]: a map task's counts too);
     * touches only the nodes that change. */
    update(tasksState) {
      for (const t of tasksState) {
        const node = nodes.get(t.id);
        if (!node) continue;
        let text = t.attempts > 1 ? `${t.status} · attempt ${t.attempts}` : t.status;
        if (t.elements) text += ` · ${t.elements.completed}/${t.elements.total} done`;
        if (node.current === text) continue;
        node.current = text;
        const cls = `s-${t.status.replace(/\W+/g, "_")}`;
        if (cls !== node.cls) { node.g.classList.replace(node.cls, cls); node.cls = cls; }
        node.status.textContent = text;
        node.g.setAttribute("aria-label", `task ${t.id}: ${text}`);
      }
    },
    select(id) {
      for (const [key, node] of nodes) node.g.classList.toggle("selected", key === id);
    },
  };
}
