// A function's page: tabs for its overview (configuration, versions, aliases, URLs,
// triggers), the invoke panel, live logs, metrics and the async/durable queues.

import { events, fn, get } from "../api.js";
import { facts, h, section, table, when } from "../dom.js";
import { invokePanel } from "./invoke.js";
import { logsPanel } from "./logs.js";
import { metricsPanel } from "./metrics.js";
import { queuePanel } from "./queue.js";

const TABS = [
  ["overview", "Overview"],
  ["invoke", "Invoke"],
  ["logs", "Logs"],
  ["metrics", "Metrics"],
  ["queue", "Queues"],
];

/** GET that answers null for a 404 (a function without a resource policy). */
async function maybe(path) {
  try {
    return await get(path);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

function configuration(c) {
  const env = Object.keys(c.Environment?.Variables || {});
  return facts([
    ["Runtime", c.Runtime || c.PackageType],
    ["Handler", c.Handler],
    ["Architecture", (c.Architectures || []).join(", ")],
    ["Memory", `${c.MemorySize} MB`],
    ["Timeout", `${c.Timeout} s`],
    ["Role", c.Role],
    ["State", [c.State, c.StateReason].filter(Boolean).join(": ")],
    ["Last update", c.LastUpdateStatus],
    ["Last modified", when(c.LastModified)],
    ["Environment variables", env.length ? env.join(", ") : "none"],
    ["ARN", c.FunctionArn],
  ]);
}

async function versions(name) {
  const data = await get(`${fn(name)}/versions`);
  return table(
    "Versions",
    [
      ["Version", (v) => v.Version],
      ["Description", (v) => v.Description || "—"],
      ["Last modified", (v) => when(v.LastModified)],
      ["Code SHA-256", (v) => h("code", {}, (v.CodeSha256 || "").slice(0, 12))],
    ],
    data.Versions || [],
  );
}

async function aliases(name) {
  const data = await get(`${fn(name)}/aliases`);
  const weights = (a) => {
    const extra = a.RoutingConfig?.AdditionalVersionWeights || {};
    const rest = Object.values(extra).reduce((s, w) => s + w, 0);
    const parts = [`${a.FunctionVersion}: ${Math.round((1 - rest) * 100)}%`];
    for (const [v, w] of Object.entries(extra)) parts.push(`${v}: ${Math.round(w * 100)}%`);
    return parts.join(", ");
  };
  return table(
    "Aliases",
    [
      ["Alias", (a) => a.Name],
      ["Routing (version: weight)", weights],
      ["Description", (a) => a.Description || "—"],
    ],
    data.Aliases || [],
  );
}

async function urls(name) {
  const data = await get(`/2021-10-31/functions/${encodeURIComponent(name)}/urls`);
  return table(
    "Function URLs",
    [
      ["URL", (u) => h("a", { href: u.FunctionUrl }, u.FunctionUrl)],
      ["Auth", (u) => u.AuthType],
      ["Invoke mode", (u) => u.InvokeMode || "BUFFERED"],
      ["CORS origins", (u) => (u.Cors?.AllowOrigins || []).join(", ") || "—"],
    ],
    data.FunctionUrlConfigs || [],
    "No function URL.",
  );
}

function targets(route, name, arn) {
  const f = route.function || "";
  return f === name || f.startsWith(`${name}:`) || f === arn || f.startsWith(`${arn}:`);
}

async function routes(name, arn) {
  const data = await get("/lamina/routes");
  return table(
    "HTTP routes",
    [
      ["Route", (r) => r.routeKey],
      ["Target", (r) => r.function],
      ["Payload format", (r) => r.payloadFormatVersion],
    ],
    (data.routes || []).filter((r) => targets(r, name, arn)),
    "No HTTP routes.",
  );
}

async function rules(arn) {
  const data = await events("ListRuleNamesByTarget", { TargetArn: arn });
  const names = data.RuleNames || [];
  return names.length ? h("ul", {}, names.map((n) => h("li", {}, n))) : h("p.muted", {}, "No rules.");
}

async function mappings(name) {
  const data = await get(`/2015-03-31/event-source-mappings/?FunctionName=${encodeURIComponent(name)}`);
  return table(
    "Event-source mappings",
    [
      ["Source", (m) => m.EventSourceArn || JSON.stringify(m.SelfManagedEventSource || {})],
      ["State", (m) => m.State],
      ["Batch size", (m) => m.BatchSize ?? "—"],
      ["UUID", (m) => h("code", {}, m.UUID)],
    ],
    data.EventSourceMappings || [],
    "No event-source mappings.",
  );
}

async function policy(name) {
  const data = await maybe(`${fn(name)}/policy`);
  const statements = data ? JSON.parse(data.Policy).Statement || [] : [];
  const principal = (s) =>
    typeof s.Principal === "string" ? s.Principal : Object.values(s.Principal || {}).join(", ");
  return table(
    "Resource policy",
    [
      ["Sid", (s) => s.Sid],
      ["Effect", (s) => s.Effect],
      ["Principal", principal],
      ["Action", (s) => [].concat(s.Action).join(", ")],
      ["Condition", (s) => (s.Condition ? JSON.stringify(s.Condition) : "—")],
    ],
    statements,
    "No resource policy.",
  );
}

function overview(name) {
  const config = get(`${fn(name)}/configuration`);
  config.catch(() => {}); // each section that needs it shows the error itself
  return h(
    "div",
    {},
    section("Configuration", async () => configuration(await config)),
    section("Versions", () => versions(name)),
    section("Aliases", () => aliases(name)),
    section("Function URLs", () => urls(name)),
    h(
      "section",
      { "aria-label": "Triggers" },
      h("h2", {}, "Triggers"),
      section("HTTP routes", async () => routes(name, (await config).FunctionArn), "h3"),
      section("EventBridge rules", async () => rules((await config).FunctionArn), "h3"),
      section("Event-source mappings", () => mappings(name), "h3"),
      section("Resource policy", () => policy(name), "h3"),
    ),
  );
}

export function functionView(name, tab) {
  const current = TABS.some(([id]) => id === tab) ? tab : "overview";
  const base = `#/functions/${encodeURIComponent(name)}`;
  const panels = {
    overview: () => ({ el: overview(name) }),
    invoke: () => invokePanel(name),
    logs: () => logsPanel(name),
    metrics: () => metricsPanel(name),
    queue: () => queuePanel(name),
  };
  const panel = panels[current]();
  const nav = h(
    "nav.tabs",
    { "aria-label": "Function" },
    h(
      "ul",
      {},
      TABS.map(([id, label]) =>
        h("li", {}, h("a", { href: `${base}/${id}`, "aria-current": id === current ? "page" : null }, label)),
      ),
    ),
  );
  return {
    title: `${name} · ${TABS.find(([id]) => id === current)[1]}`,
    el: h("div", {}, h("p.crumbs", {}, h("a", { href: "#/functions" }, "← All functions")), h("h1", {}, name), nav, panel.el),
    stop: panel.stop,
  };
}
