// The invoke panel: a JSON payload (checked as typed), a synchronous Invoke with
// LogType Tail, and its answer: status, FunctionError, the result and the decoded log tail.

import { call, fn } from "../api.js";
import { errorBox, facts, fill, h, pretty } from "../dom.js";

function decodeTail(b64) {
  if (!b64) return "";
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

function validate(text) {
  try {
    JSON.parse(text);
    return "";
  } catch (e) {
    return `Not JSON: ${e.message}`;
  }
}

async function invoke(name, payload, qualifier) {
  const query = qualifier ? `?Qualifier=${encodeURIComponent(qualifier)}` : "";
  const started = performance.now();
  const resp = await call("POST", `${fn(name)}/invocations${query}`, {
    body: payload,
    headers: { "X-Amz-Log-Type": "Tail", "Content-Type": "application/json" },
  });
  const ms = Math.round(performance.now() - started);
  const functionError = resp.headers.get("X-Amz-Function-Error");
  const result = await resp.text();
  return h(
    "div",
    { class: functionError ? "result failed" : "result ok" },
    facts([
      ["Status", resp.status],
      ["Function error", functionError || "none"],
      ["Executed version", resp.headers.get("X-Amz-Executed-Version")],
      ["Round trip", `${ms} ms`],
    ]),
    h("h3", {}, "Result"),
    h("pre.output", { "data-testid": "invoke-result" }, pretty(result)),
    h("h3", {}, "Log tail"),
    h("pre.output", { "data-testid": "invoke-log" }, decodeTail(resp.headers.get("X-Amz-Log-Result"))),
  );
}

export function invokePanel(name) {
  const payload = h("textarea", { id: "payload", rows: 8, spellcheck: "false", "aria-describedby": "payload-check" }, "{}");
  const qualifier = h("input", { id: "qualifier", placeholder: "$LATEST" });
  const check = h("p.hint", { id: "payload-check", "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Invoke");
  const out = h("div", { "aria-live": "polite", id: "invoke-out" });
  const recheck = () => {
    const problem = validate(payload.value);
    fill(check, problem);
    payload.setAttribute("aria-invalid", problem ? "true" : "false");
    button.disabled = Boolean(problem);
  };
  payload.addEventListener("input", recheck);
  const form = h(
    "form.invoke",
    {
      on: {
        submit: async (e) => {
          e.preventDefault();
          if (validate(payload.value)) return;
          button.disabled = true;
          fill(out, h("p.muted", {}, "Invoking…"));
          try {
            fill(out, await invoke(name, payload.value, qualifier.value.trim()));
          } catch (error) {
            fill(out, errorBox(error));
          } finally {
            button.disabled = false;
          }
        },
      },
    },
    h("label", { for: "payload" }, "Payload (JSON)"),
    payload,
    check,
    h("label", { for: "qualifier" }, "Version or alias (optional)"),
    qualifier,
    h("p", {}, button),
  );
  return { el: h("section", {}, h("h2", {}, "Invoke"), form, out) };
}
