// Hand-drawn SVG line charts of CloudWatch series: one polyline and one circle per data
// point per series, over a fixed time window. No library: the charts are small and few.

const NS = "http://www.w3.org/2000/svg";
const W = 600;
const H = 160;
const PAD = { left: 48, right: 8, top: 8, bottom: 22 };

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function fmt(v) {
  if (v >= 1000) return `${+(v / 1000).toPrecision(3)}k`;
  return `${+v.toPrecision(3)}`;
}

/**
 * A chart of `series` ([{label, points: [[epochSeconds, value], ...]}]) from `start` to
 * `end` (epoch seconds); `unit` is shown on the axis.
 */
export function lineChart(title, series, start, end, unit = "") {
  const all = series.flatMap((s) => s.points.map(([, v]) => v));
  const max = Math.max(1, ...all);
  const x = (t) => PAD.left + ((t - start) / Math.max(1, end - start)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const count = all.length;
  const summary = count
    ? `${title}: ${count} data points, highest ${fmt(max)}${unit ? ` ${unit}` : ""}`
    : `${title}: no data in this range`;
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": summary,
    "data-points": count,
    class: "chart",
  });
  root.append(svg("title", {}, summary));
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    root.append(
      svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: PAD.left - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)),
    );
  }
  for (const [t, anchor] of [
    [start, "start"],
    [end, "end"],
  ]) {
    const label = new Date(t * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    root.append(svg("text", { x: x(t), y: H - 6, "text-anchor": anchor }, label));
  }
  series.forEach((s, i) => {
    const points = [...s.points].sort((a, b) => a[0] - b[0]);
    const g = svg("g", { class: `series s${i}`, "data-label": s.label });
    if (points.length > 1) {
      const d = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      g.append(svg("polyline", { points: d }));
    }
    for (const [t, v] of points) {
      const dot = svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5 });
      dot.append(svg("title", {}, `${s.label} ${new Date(t * 1000).toLocaleString()}: ${fmt(v)}`));
      g.append(dot);
    }
    root.append(g);
  });
  return root;
}
