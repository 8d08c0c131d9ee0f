// Workflows: the latest version of each; one workflow's versions and its definition, drawn.
import {api, el, fmtTime, json} from "./lib.js";
import {drawDag} from "./dag.js";

export async function workflowsPage(main, id, query) {
  if (!id) {
    const {workflows} = await api("/workflows");
    main.replaceChildren(el("h1", {}, "Workflows"),
      workflows.length ? el("table", {class: "runs", "aria-label": "Workflows"},
        el("thead", {}, el("tr", {}, ["Workflow", "Latest version", "Registered", "Tasks", "Runs"].map((h) => el("th", {scope: "col"}, h)))),
        el("tbody", {}, workflows.map((w) => el("tr", {},
          el("td", {}, el("a", {href: `#/workflows/${encodeURIComponent(w.id)}`}, w.id)),
          el("td", {}, `v${w.version}`), el("td", {}, fmtTime(w.registeredAt)),
          el("td", {}, String(w.definition.tasks.length)),
          el("td", {}, el("a", {href: `#/runs?workflowId=${encodeURIComponent(w.id)}`}, "runs"))))))
        : el("p", {class: "empty"}, "No workflow is registered yet (POST /workflows)."));
    return null;
  }
  const latest = await api(`/workflows/${encodeURIComponent(id)}`);
  const version = Number(query.get("version")) || latest.version;
  const shown = version === latest.version ? latest : await api(`/workflows/${encodeURIComponent(id)}?version=${version}`);
  const select = el("select", {id: "wf-version", "aria-label": "Version"},
    Array.from({length: latest.version}, (_, i) => latest.version - i).map((v) =>
      el("option", {value: v, selected: v === version}, `v${v}${v === latest.version ? " (latest)" : ""}`)));
  select.addEventListener("change", () => { location.hash = `#/workflows/${encodeURIComponent(id)}?version=${select.value}`; });
  const dag = drawDag(shown.definition.tasks, {label: `Graph of ${id} v${version}`,
    onSelect: (t) => {
      dag.select(t);
      const task = shown.definition.tasks.find((x) => x.id === t);
      taskBox.replaceChildren(el("h2", {}, "Task ", el("span", {class: "mono"}, t)), el("pre", {}, json(task)));
    }});
  dag.update(shown.definition.tasks.map((t) => ({id: t.id, status: t.handler ? `handler ${t.handler}` : (t.workflow ? `workflow ${t.workflow}` : "task"), attempts: 0})));
  const taskBox = el("section", {class: "detail", "aria-live": "polite"}, el("p", {class: "help"}, "Select a task to see its definition."));
  main.replaceChildren(
    el("h1", {}, "Workflow ", el("span", {class: "mono"}, id)),
    el("div", {class: "toolbar"}, el("label", {for: "wf-version"}, "Version"), select,
      el("span", {}, ` registered ${fmtTime(shown.registeredAt)}`),
      el("a", {href: `#/runs?workflowId=${encodeURIComponent(id)}`, class: "button"}, "Its runs")),
    el("div", {class: "run-body"}, el("section", {class: "graph", "aria-label": "Graph"},
      el("div", {class: "dag-scroll"}, dag.element)), taskBox),
    el("details", {}, el("summary", {}, "Definition (JSON)"), el("pre", {id: "wf-json"}, json(shown.definition))));
  return null;
}
