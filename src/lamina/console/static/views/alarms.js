// CloudWatch alarms (DescribeAlarms), metric and composite.

import { cloudwatch } from "../api.js";
import { h, section, table } from "../dom.js";

function metric(a) {
  if (!a.MetricName) return a.AlarmRule || "—";
  const dims = (a.Dimensions || []).map((d) => `${d.Name}=${d.Value}`).join(", ");
  return `${a.Namespace}/${a.MetricName}${dims ? ` (${dims})` : ""}`;
}

function threshold(a) {
  if (a.Threshold === undefined) return "—";
  const op = {
    GreaterThanOrEqualToThreshold: "≥",
    GreaterThanThreshold: ">",
    LessThanThreshold: "<",
    LessThanOrEqualToThreshold: "≤",
  }[a.ComparisonOperator];
  const stat = a.Statistic || a.ExtendedStatistic || "";
  return `${stat} ${op || a.ComparisonOperator} ${a.Threshold} for ${a.EvaluationPeriods} × ${a.Period} s`;
}

async function alarms() {
  const out = [];
  let token;
  do {
    const page = await cloudwatch("DescribeAlarms", token ? { NextToken: token } : {});
    out.push(...(page.MetricAlarms || []), ...(page.CompositeAlarms || []));
    token = page.NextToken;
  } while (token);
  return table(
    "Alarms",
    [
      ["Name", (a) => a.AlarmName],
      ["State", (a) => h(`span.state.${(a.StateValue || "").toLowerCase()}`, {}, a.StateValue)],
      ["Metric", metric],
      ["Threshold", threshold],
      ["Actions", (a) => (a.AlarmActions || []).join(", ") || "—"],
      ["Reason", (a) => a.StateReason || "—"],
    ],
    out,
    "No alarms.",
  );
}

export function alarmsView() {
  return {
    title: "Alarms",
    el: h("div", {}, h("h1", {}, "Alarms"), section("CloudWatch alarms", alarms)),
  };
}
