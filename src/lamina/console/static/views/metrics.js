// Charts of the function's CloudWatch metrics (AWS/Lambda, FunctionName dimension) from one
// GetMetricData call per range: 1 h at 1-minute periods, 24 h at 5 minutes, 7 d at 1 hour.

import { cloudwatch } from "../api.js";
import { errorBox, fill, h } from "../dom.js";
import { lineChart } from "../charts.js";

const RANGES = [
  ["1 h", 3600, 60],
  ["24 h", 86400, 300],
  ["7 d", 604800, 3600],
];

const CHARTS = [
  ["invocations", "Invocations", "", [["inv", "Invocations", "Sum"]]],
  ["errors", "Errors", "", [["err", "Errors", "Sum"]]],
  ["throttles", "Throttles", "", [["thr", "Throttles", "Sum"]]],
  [
    "duration",
    "Duration",
    "ms",
    [
      ["p50", "Duration", "p50"],
      ["p90", "Duration", "p90"],
      ["p99", "Duration", "p99"],
    ],
  ],
  ["concurrency", "Concurrent executions", "", [["conc", "ConcurrentExecutions", "Maximum"]]],
];

function queries(name, period) {
  return CHARTS.flatMap(([, , , series]) =>
    series.map(([id, metric, stat]) => ({
      Id: id,
      Label: stat.startsWith("p") ? stat : metric,
      MetricStat: {
        Metric: {
          Namespace: "AWS/Lambda",
          MetricName: metric,
          Dimensions: [{ Name: "FunctionName", Value: name }],
        },
        Period: period,
        Stat: stat,
      },
    })),
  );
}

async function fetchAll(name, start, end, period) {
  const found = {};
  let token;
  do {
    const body = { MetricDataQueries: queries(name, period), StartTime: start, EndTime: end };
    if (token) body.NextToken = token;
    const page = await cloudwatch("GetMetricData", body);
    for (const r of page.MetricDataResults || []) {
      const points = (r.Timestamps || []).map((t, i) => [t, r.Values[i]]);
      found[r.Id] = (found[r.Id] || []).concat(points);
    }
    token = page.NextToken;
  } while (token);
  return found;
}

function legend(series) {
  if (series.length < 2) return null;
  return h("span.legend", {}, series.map(([, , stat], i) => h(`span.key.s${i}`, {}, stat)));
}

export function metricsPanel(name) {
  const out = h("div.charts", { "aria-live": "polite" });
  const buttons = RANGES.map(([label, seconds, period]) =>
    h("button", { type: "button", "aria-pressed": "false", on: { click: () => show(seconds, period, label) } }, label),
  );
  async function show(seconds, period, label) {
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.textContent === label));
    const end = Math.ceil(Date.now() / 1000 / period) * period;
    const start = end - seconds;
    fill(out, h("p.muted", {}, "Loading…"));
    try {
      const data = await fetchAll(name, start, end, period);
      fill(
        out,
        CHARTS.map(([id, title, unit, series]) =>
          h(
            "figure",
            { "data-chart": id },
            h("figcaption", {}, title, unit ? ` (${unit})` : "", legend(series)),
            lineChart(title, series.map(([sid, , stat]) => ({ label: series.length > 1 ? stat : title, points: data[sid] || [] })), start, end, unit),
          ),
        ),
      );
    } catch (error) {
      fill(out, errorBox(error));
    }
  }
  show(...RANGES[0].slice(1), RANGES[0][0]);
  return {
    el: h(
      "section",
      {},
      h("h2", {}, "Metrics"),
      h("div.toolbar", { role: "group", "aria-label": "Time range" }, buttons),
      out,
    ),
  };
}
