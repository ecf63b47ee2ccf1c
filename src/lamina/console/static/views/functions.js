// The functions list: one request (/console/api/functions, already filtered to what the
// key may read, with last-hour counts), filtered by name in the page.

import { get } from "../api.js";
import { errorBox, fill, h, table, when } from "../dom.js";

function rows(functions, filter) {
  const needle = filter.trim().toLowerCase();
  return functions.filter((f) => f.FunctionName.toLowerCase().includes(needle));
}

function listing(functions) {
  return table(
    "Functions",
    [
      ["Name", (f) => h("a", { href: `#/functions/${encodeURIComponent(f.FunctionName)}` }, f.FunctionName)],
      ["State", (f) => f.State || "—"],
      ["Runtime", (f) => f.Runtime || f.PackageType || "—"],
      ["Memory (MB)", (f) => f.MemorySize],
      ["Invocations (1 h)", (f) => f.Lamina?.Invocations1h ?? "—"],
      ["Errors (1 h)", (f) => f.Lamina?.Errors1h ?? "—"],
      ["Last invoked", (f) => when(f.Lamina?.LastInvoked)],
    ],
    functions,
    "No functions.",
  );
}

export function functionsView() {
  const filter = h("input", { id: "fn-filter", type: "search", autocomplete: "off" });
  const out = h("div", { "aria-live": "polite" }, h("p.muted", {}, "Loading…"));
  let all = [];
  const show = () => fill(out, listing(rows(all, filter.value)));
  filter.addEventListener("input", show);
  get("/console/api/functions").then(
    (data) => {
      all = data.Functions || [];
      show();
    },
    (error) => fill(out, errorBox(error)),
  );
  return {
    title: "Functions",
    el: h(
      "section",
      {},
      h("h1", {}, "Functions"),
      h("p.toolbar", {}, h("label", { for: "fn-filter" }, "Filter by name "), filter),
      out,
    ),
  };
}
