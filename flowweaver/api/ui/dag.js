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
 * Draw the DAG into a new <svg>; return {element, update(statuses), nodes}. Each node shows its
 * id and its status as text, coloured by status class; it is focusable and `onSelect(id)` runs
 * on click, Enter or Space.
 */
export function drawDag(tasks, {onSelect = () => {}, label = "Workflow graph"} = {}) {
  const {positions, width, height} = layout(tasks);
  const root = svg("svg", {
    class: "dag", width, height, viewBox: `0 0 ${width} ${height}`, role: "group",
    "aria-label": label,
  });
  const edges = svg("g", {class: "edges", "aria-hidden": "true"});
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
  for (const t of tasks) {
    const p = positions.get(t.id);
    const g = svg("g", {
      class: "node s-none", transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "button",
      "data-task": t.id, "aria-label": `task ${t.id}`,
    });
    g.append(svg("rect", {width: NODE_W, height: NODE_H, rx: 6}));
    const name = svg("text", {x: 8, y: 16, class: "name"});
    name.textContent = t.id.length > 20 ? `${t.id.slice(0, 19)}…` : t.id;
    const title = svg("title");
    title.textContent = t.id;
    const status = svg("text", {x: 8, y: 32, class: "status"});
    g.append(title, name, status);
    g.addEventListener("click", () => onSelect(t.id));
    g.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(t.id); }
    });
    nodes.set(t.id, {g, status, current: null});
    root.append(g);
  }
  return {
    element: root,
    nodes,
    /** Show each task's status ({id: {status, attempts}}); touches only the nodes that change. */
    update(tasksState) {
      for (const t of tasksState) {
        const node = nodes.get(t.id);
        if (!node) continue;
        const text = t.attempts > 1 ? `${t.status} · attempt ${t.attempts}` : t.status;
        if (node.current === text) continue;
        node.current = text;
        node.g.setAttribute("class", `node s-${t.status}`);
        node.status.textContent = text;
        node.g.setAttribute("aria-label", `task ${t.id}: ${text}`);
      }
    },
    select(id) {
      for (const [key, node] of nodes) node.g.classList.toggle("selected", key === id);
    },
  };
}
