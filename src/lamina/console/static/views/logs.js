// Live logs: FilterLogEvents on the function's log group, polled about once a second from
// where the last poll ended, newest line at the bottom; a filter pattern and a pause.

import { logs } from "../api.js";
import { errorBox, fill, h } from "../dom.js";

const POLL_MS = 1000;
const KEEP_LINES = 1000;
const BACKLOG_MS = 15 * 60 * 1000;

export function logsPanel(name) {
  const group = `/aws/lambda/${name}`;
  const pattern = h("input", { id: "log-filter", autocomplete: "off", placeholder: 'e.g. ERROR or "timed out"' });
  const pause = h("button", { type: "button", "aria-pressed": "false" }, "Pause");
  const status = h("p.hint", { "aria-live": "polite" });
  const list = h("ol.log", { "aria-live": "polite", "aria-label": `Log events of ${group}`, tabindex: "0" });
  let since = Date.now() - BACKLOG_MS;
  let seen = new Set();
  let paused = false;
  let timer = null;
  let stopped = false;

  const reset = () => {
    since = Date.now() - BACKLOG_MS;
    seen = new Set();
    list.replaceChildren();
  };

  const add = (events) => {
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    for (const e of events) {
      if (seen.has(e.eventId)) continue;
      seen.add(e.eventId);
      since = Math.max(since, e.timestamp);
      list.append(
        h(
          "li",
          {},
          h("time", { datetime: new Date(e.timestamp).toISOString() }, new Date(e.timestamp).toLocaleTimeString()),
          " ",
          h("span.stream", {}, e.logStreamName.split("]").pop().slice(0, 8)),
          " ",
          h("span.msg", {}, e.message.replace(/\r/g, "\n").trimEnd()),
        ),
      );
    }
    while (list.children.length > KEEP_LINES) list.firstChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  };

  const poll = async () => {
    if (stopped) return;
    if (!paused) {
      try {
        let token;
        do {
          const body = { logGroupName: group, startTime: since, filterPattern: pattern.value, limit: 500 };
          if (token) body.nextToken = token;
          const page = await logs("FilterLogEvents", body);
          add(page.events || []);
          token = page.nextToken;
        } while (token && !stopped);
        fill(status, `Following ${group}.`);
      } catch (error) {
        // No log group yet is normal before the first invoke.
        if (error.type === "ResourceNotFoundException") fill(status, `${group} has no log events yet.`);
        else fill(status, errorBox(error));
      }
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };

  pattern.addEventListener("change", reset);
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    fill(status, paused ? "Paused." : `Following ${group}.`);
  });
  poll();
  return {
    el: h(
      "section",
      {},
      h("h2", {}, "Live logs"),
      h("p.toolbar", {}, h("label", { for: "log-filter" }, "Filter pattern "), pattern, " ", pause),
      status,
      list,
    ),
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
