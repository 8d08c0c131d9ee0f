// The web UI's entry point: who is signed in, the hash router, the sign-in page.
import {api, ApiError, el, setUnauthorizedHandler} from "./lib.js";
import {runsPage} from "./runs.js";
import {runPage} from "./run.js";
import {workflowsPage} from "./workflows.js";
import {schedulesPage} from "./schedules.js";

export const session = {auth: "none", name: "anonymous", role: "admin", logPosition: 0};
let cleanup = null;
const main = document.getElementById("main");

async function whoami() {
  Object.assign(session, await api("/auth/whoami"));
  document.getElementById("who").textContent =
    session.auth === "token" ? `${session.name} (${session.role})` : "";
  document.getElementById("signout").hidden = session.auth !== "token";
}

function signInPage() {
  const input = el("input", {id: "token", type: "password", autocomplete: "current-password",
    required: true, "aria-describedby": "token-help", spellcheck: "false"});
  const error = el("p", {class: "error", role: "alert"});
  const form = el("form", {class: "signin", "aria-labelledby": "signin-title"},
    el("h1", {id: "signin-title"}, "Sign in"),
    el("label", {for: "token"}, "Token"), input,
    el("p", {id: "token-help", class: "help"},
      "A token from flowweaver tokens create. It is kept in an HttpOnly cookie, not by this page."),
    error,
    el("button", {type: "submit", class: "primary"}, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/auth/session", {method: "POST", body: {token: input.value.trim()}});
      input.value = "";
      await whoami();
      signingIn = false;
      if (location.hash === "#/runs") await route();
      else location.hash = "#/runs";
    } catch (err) {
      error.textContent = err instanceof ApiError && err.status === 401
        ? "That token is unknown, revoked or malformed." : String(err.message);
    }
  });
  return {element: form, focus: input};
}

let signingIn = false;
function showSignIn() {
  if (signingIn) return;
  signingIn = true;
  cleanup?.();
  cleanup = null;
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  const page = signInPage();
  main.replaceChildren(page.element);
  page.focus.focus();
}

export async function route() {
  signingIn = false;
  cleanup?.();
  cleanup = null;
  const hash = location.hash || "#/runs";
  const [path, search] = hash.slice(1).split("?");
  const [, page, ...rest] = path.split("/");
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === page || (page === "run" && a.dataset.nav === "runs")) {
      a.setAttribute("aria-current", "page");
    } else {
      a.removeAttribute("aria-current");
    }
  }
  const query = new URLSearchParams(search || "");
  const id = decodeURIComponent(rest.join("/"));
  main.replaceChildren(el("p", {class: "loading"}, "Loading…"));
  try {
    if (page === "run" && id) cleanup = await runPage(main, id, query);
    else if (page === "workflows") cleanup = await workflowsPage(main, id, query);
    else if (page === "schedules") cleanup = await schedulesPage(main);
    else cleanup = await runsPage(main, query);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    main.replaceChildren(el("p", {class: "error", role: "alert"}, `Could not load: ${err.message}`));
  }
}

async function start() {
  setUnauthorizedHandler(showSignIn);
  document.getElementById("signout").addEventListener("click", async () => {
    await api("/auth/session", {method: "DELETE"});
    showSignIn();
  });
  window.addEventListener("hashchange", () => { if (!signingIn) route(); });
  try {
    await whoami();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { showSignIn(); return; }
    throw err;
  }
  await route();
}

start();
