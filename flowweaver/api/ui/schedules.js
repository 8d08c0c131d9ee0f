// Schedules, with their next fire times, on a server that has them (GET /schedules).
import {api, el, fmtTime, json} from "./lib.js";

export async function schedulesPage(main) {
  // Ask the server's own OpenAPI document whether it has schedules, so an older server is
  // told apart from one with none, without a 404 in the browser's console.
  const doc = await api("/openapi.json");
  if (!doc.paths["/schedules"]) {
    main.replaceChildren(el("h1", {}, "Schedules"),
      el("p", {class: "empty", id: "schedules-empty"}, "This server has no schedules: its API has no /schedules routes."));
    return null;
  }
  const answer = await api("/schedules");
  const schedules = Array.isArray(answer) ? answer : (answer.schedules || []);
  if (!schedules.length) {
    main.replaceChildren(el("h1", {}, "Schedules"),
      el("p", {class: "empty", id: "schedules-empty"}, "No schedules yet (POST /schedules)."));
    return null;
  }
  const nextFires = (s) => s.nextFireTimes || s.nextFires || s.next || (s.nextFireTime ? [s.nextFireTime] : []);
  main.replaceChildren(el("h1", {}, "Schedules"),
    el("table", {class: "runs", id: "schedules", "aria-label": "Schedules"},
      el("thead", {}, el("tr", {}, ["Schedule", "Workflow", "Cron", "Time zone", "State", "Next fire times", ""].map((h) => el("th", {scope: "col"}, h)))),
      el("tbody", {}, schedules.map((s) => el("tr", {},
        el("td", {class: "mono"}, s.id),
        el("td", {}, el("a", {href: `#/runs?workflowId=${encodeURIComponent(s.workflowId)}`}, s.workflowId)),
        el("td", {class: "mono"}, s.cron), el("td", {}, s.timezone || "UTC"),
        el("td", {}, s.paused ? "paused" : "active"),
        el("td", {}, el("ul", {class: "plain"}, [].concat(nextFires(s)).slice(0, 5).map((t) => el("li", {}, fmtTime(t))))),
        el("td", {}, el("details", {}, el("summary", {}, "JSON"), el("pre", {}, json(s)))))))));
  return null;
}
