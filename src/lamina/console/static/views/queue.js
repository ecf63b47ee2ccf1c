// The function's asynchronous queue (Lamina's /lamina/async: its lane and the events given
// up) and its durable executions (ListDurableExecutionsByFunction), where served.

import { get } from "../api.js";
import { facts, h, section, table, when } from "../dom.js";

async function asyncQueue(name) {
  const data = await get("/lamina/async?MaxItems=1000");
  const lane = data.functions?.[name];
  const dropped = (data.droppedEvents || []).filter((d) => d.functionName === name);
  return h(
    "div",
    {},
    facts([
      ["Queued (waiting or running)", lane ? lane.depth : 0],
      ["Running", lane ? lane.running : 0],
      ["Window", lane ? lane.window : "—"],
      ["Oldest event age", lane ? `${lane.oldestAgeSeconds} s` : "—"],
    ]),
    h("h3", {}, "Events given up"),
    table(
      "Events given up",
      [
        ["Request id", (d) => h("code", {}, d.requestId)],
        ["Qualifier", (d) => d.qualifier || "$LATEST"],
        ["Reason", (d) => d.reason],
        ["Attempts", (d) => d.attempts],
        ["Dropped", (d) => when(d.droppedAt * 1000)],
        ["Detail", (d) => d.detail || "—"],
      ],
      dropped,
    ),
  );
}

async function durable(name) {
  const path = `/2025-12-01/functions/${encodeURIComponent(name)}/durable-executions?MaxItems=100`;
  const data = await get(path);
  return table(
    "Durable executions",
    [
      ["Name", (e) => e.DurableExecutionName],
      ["Status", (e) => e.Status],
      ["Started", (e) => when(e.StartTimestamp * 1000)],
      ["Ended", (e) => (e.EndTimestamp ? when(e.EndTimestamp * 1000) : "—")],
    ],
    data.DurableExecutions || [],
    "No durable executions.",
  );
}

export function queuePanel(name) {
  return {
    el: h(
      "div",
      {},
      section("Asynchronous queue", () => asyncQueue(name)),
      section("Durable executions", () => durable(name)),
    ),
  };
}
