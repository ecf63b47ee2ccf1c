// Live logs: FilterLogEvents on the function's log group, polled about once a second from
// where the last poll ended, newest line at the bottom; a filter pattern and a pause.

import { logs } from "../api.js";
import { errorBox, fill, h } from "../dom.js";

const POLL_MS = 1000;
const KEEP_LINES = 1000;
const BACKLOG_MS = 15 * 60 * 1000;
// Each poll asks again for this much before the newest event seen, since a line can be
// stored a little after a later one; events already shown are skipped by id.
const OVERLAP_MS = 5000;
// A busy group's backlog is read a few pages per poll, not all at once.
const PAGES_PER_POLL = 5;

export function logsPanel(name) {
  const group = `/aws/lambda/${name}`;
  const pattern = h("input", { id: "log-filter", autocomplete: "off", placeholder: 'e.g. ERROR or "timed out"' });
  const pause = h("button", { type: "button", "aria-pressed": "false" }, "Pause");
  const status = h("p.hint", { "aria-live": "polite" });
  const list = h("ol.log", { "aria-live": "polite", "aria-label": `Log events of ${group}`, tabindex: "0" });
  let since = Date.now() - BACKLOG_MS;
  let seen = new Map(); // eventId -> timestamp, of the events within the overlap
  let resume = null; // the request for the rest of a backlog longer than a poll reads
  let paused = false;
  let timer = null;
  let stopped = false;
  let generation = 0; // a poll answered after the filter changed is dropped

  const say = (text) => {
    if (status.textContent !== text) fill(status, text); // announced once, not every second
  };

  const reset = () => {
    since = Date.now() - BACKLOG_MS;
    seen = new Map();
    resume = null;
    generation += 1;
    list.replaceChildren();
  };

  const add = (events) => {
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    for (const e of events) {
      if (seen.has(e.eventId)) continue;
      seen.set(e.eventId, e.timestamp);
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
    for (const [id, t] of seen) if (t < since - 2 * OVERLAP_MS) seen.delete(id);
    while (list.children.length > KEEP_LINES) list.firstChild.remove();
    if (stick) list.scrollTop = list.scrollHeight;
  };

  const poll = async () => {
    if (stopped) return;
    if (!paused) {
      const asked = generation;
      try {
        let body = resume || {
          logGroupName: group,
          startTime: since - OVERLAP_MS,
          filterPattern: pattern.value,
          limit: 500,
        };
        resume = null;
        for (let pages = 1; !stopped; pages++) {
          const page = await logs("FilterLogEvents", body);
          if (asked !== generation) break;
          add(page.events || []);
          if (!page.nextToken) break;
          body = { ...body, nextToken: page.nextToken };
          if (pages === PAGES_PER_POLL) {
            resume = body; // the rest of this backlog, next poll
            break;
          }
        }
        say(`Following ${group}.`);
      } catch (error) {
        // No log group yet is normal before the first invoke.
        if (error.type === "ResourceNotFoundException") say(`${group} has no log events yet.`);
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
    say(paused ? "Paused." : `Following ${group}.`);
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
