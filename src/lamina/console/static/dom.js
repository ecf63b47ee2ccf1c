// A few DOM helpers: elements are built with h() (text set as text, never as HTML, so a
// function's output or a log line cannot inject markup).

/** h("tag.class", {attrs, on: {event: fn}}, ...children) */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (v === true) el.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An AWS error (or any) as a readable alert. */
export function errorBox(error) {
  // AWS's error type for an API error, the class for the page's own (URIError, ...)
  const type = error.type || (error.name && error.name !== "Error" ? error.name : "");
  return h("p.error", { role: "alert" }, type ? `${type}: ` : "", error.message || String(error));
}

/** A table of rows; `cols` are [heading, row => cell]. */
export function table(caption, cols, rows, empty = "None.") {
  if (!rows.length) return h("p.muted", {}, empty);
  return h(
    "table",
    {},
    h("caption.sr", {}, caption),
    h("thead", {}, h("tr", {}, cols.map(([name]) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, cols.map(([, cell]) => h("td", {}, cell(r)))))),
  );
}

/** A definition list of [term, value] pairs. */
export function facts(pairs) {
  return h(
    "dl.facts",
    {},
    pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]),
  );
}

/** A section with a heading that fills itself from an async loader; errors shown in place. */
export function section(title, load, level = "h2") {
  const body = h("div", { "aria-busy": "true" }, h("p.muted", {}, "Loading…"));
  const el = h("section", { "aria-label": title }, h(level, {}, title), body);
  Promise.resolve()
    .then(load)
    .then(
      (content) => fill(body, content),
      (error) => fill(body, errorBox(error)),
    )
    .finally(() => body.removeAttribute("aria-busy"));
  return el;
}

export function when(ms) {
  if (ms === null || ms === undefined || ms === "") return "—";
  const d = new Date(typeof ms === "number" ? ms : Date.parse(ms));
  return Number.isNaN(d.getTime()) ? String(ms) : d.toLocaleString();
}

export function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}
