// The one modal dialog: every operator action asks for a reason here.
import {el} from "./lib.js";

/**
 * Ask for a reason and `fields` ([{name, label, value, multiline, required, help}]); resolve
 * with {reason, values} when confirmed, or null. `submit(answer)` runs before the dialog
 * closes: an exception's message is shown in the dialog, which stays open.
 */
export function ask(title, fields = [], submit = async () => {}) {
  const dialog = document.getElementById("dialog");
  const reason = document.getElementById("dialog-reason");
  const error = document.getElementById("dialog-error");
  const form = document.getElementById("dialog-form");
  document.getElementById("dialog-title").textContent = title;
  error.textContent = "";
  reason.value = "";
  const inputs = new Map();
  document.getElementById("dialog-fields").replaceChildren(...fields.map((f) => {
    const id = `dialog-field-${f.name}`;
    const input = f.multiline
      ? el("textarea", {id, name: f.name, rows: 4, spellcheck: "false", required: f.required})
      : el("input", {id, name: f.name, type: f.type || "text", required: f.required,
        min: f.min, max: f.max});
    input.value = f.value ?? "";
    inputs.set(f.name, input);
    return el("label", {for: id}, f.label, input, f.help ? el("small", {}, f.help) : null);
  }));
  return new Promise((resolve) => {
    const finish = (answer) => {
      form.onsubmit = null;
      document.getElementById("dialog-cancel").onclick = null;
      dialog.oncancel = null;
      dialog.close();
      resolve(answer);
    };
    form.onsubmit = async (e) => {
      e.preventDefault();
      const answer = {reason: reason.value.trim(),
        values: Object.fromEntries([...inputs].map(([k, v]) => [k, v.value]))};
      try {
        await submit(answer);
        finish(answer);
      } catch (err) {
        error.textContent = err.message;
      }
    };
    document.getElementById("dialog-cancel").onclick = () => finish(null);
    dialog.oncancel = () => finish(null);
    dialog.showModal();
    (inputs.values().next().value || reason).focus();
  });
}
