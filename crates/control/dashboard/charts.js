// Ferry dashboard charts, drawn as inline SVG: line charts over time and a call-graph picture.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, v);
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  /**
   * A line chart. `series`: [{label, cls, points: [[tMs, value|null], ...]}]; gaps where null.
   * `opts`: {title, unit(v) -> text, min, max, spanMs}.
   */
  function line(series, opts) {
    const W = 360, H = 150, L = 44, R = 8, T = 22, B = 22;
    const now = Date.now();
    const span = opts.spanMs || 15 * 60 * 1000;
    const x0 = now - span;
    const values = series.flatMap((se) => se.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined));
    let min = opts.min !== undefined ? opts.min : Math.min(0, ...values);
    let max = opts.max !== undefined ? opts.max : Math.max(1, ...values) * 1.1;
    if (max <= min) max = min + 1;
    const x = (t) => L + ((t - x0) / span) * (W - L - R);
    const y = (v) => T + (1 - (v - min) / (max - min)) * (H - T - B);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": opts.title });
    svg.append(s("text", { x: L, y: 14, class: "chart-title" }, opts.title));
    for (const frac of [0, 0.5, 1]) {
      const v = min + frac * (max - min);
      svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
      svg.append(s("text", { x: L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, opts.unit(v)));
    }
    for (const [frac, label] of [[0, `-${Math.round(span / 60000)}m`], [1, "now"]]) {
      svg.append(s("text", { x: L + frac * (W - L - R), y: H - 6, class: "axis", "text-anchor": frac ? "end" : "start" }, label));
    }
    let lx = L + 150;
    for (const se of series) {
      let d = "";
      let pen = false;
      for (const [t, v] of se.points) {
        if (v === null || v === undefined || t < x0) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      }
      if (d) svg.append(s("path", { d, class: `series ${se.cls}` }));
      // a dot on the latest point, so a single sample is still visible
      const last = [...se.points].reverse().find((p) => p[1] !== null && p[1] !== undefined && p[0] >= x0);
      if (last) svg.append(s("circle", { cx: x(last[0]), cy: y(last[1]), r: 2.5, class: `dot ${se.cls}` }));
      if (series.length > 1) {
        svg.append(s("text", { x: lx, y: 14, class: `legend ${se.cls}` }, se.label));
        lx += 40;
      }
    }
    if (!values.length) svg.append(s("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" }, "no traffic yet"));
    return svg;
  }

  /** The three golden-metric charts from history points ({timestampMs, success, rps, latencyMs}). */
  function golden(points, maxSpanMs) {
    // Zoom to the data while there is less than the full range (at least 2 minutes).
    const data = points.find((p) => p.rps !== null && p.rps !== undefined);
    const first = data ? data.timestampMs : Date.now();
    const spanMs = Math.min(maxSpanMs, Math.max(2 * 60 * 1000, Date.now() - first));
    const pick = (f) => points.map((p) => [p.timestampMs, f(p)]);
    const lat = (k) => pick((p) => p.latencyMs && p.latencyMs[k]);
    return [
      line([{ label: "success", cls: "s-success", points: pick((p) => p.success) }],
        { title: "Success rate", unit: (v) => `${Math.round(v * 100)}%`, min: 0, max: 1, spanMs }),
      line([{ label: "rps", cls: "s-rps", points: pick((p) => p.rps) }],
        { title: "Requests per second", unit: (v) => v.toFixed(v < 10 ? 1 : 0), spanMs }),
      line([
        { label: "p50", cls: "s-p50", points: lat("p50") },
        { label: "p95", cls: "s-p95", points: lat("p95") },
        { label: "p99", cls: "s-p99", points: lat("p99") },
      ], { title: "Latency (ms)", unit: (v) => (v < 10 ? v.toFixed(1) : `${Math.round(v)}`), spanMs }),
    ];
  }

  /**
   * A call graph around `center`: callers on the left, destinations on the right, edges
   * coloured by success. Nodes: {label, href, success}.
   */
  function callGraph(center, callers, destinations, healthOf) {
    const rowsN = Math.max(callers.length, destinations.length, 1);
    const W = 900, rowH = 52, H = Math.max(rowH * rowsN + 20, 80);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "graph", role: "img", "aria-label": "call graph" });
    const nodeW = 170, nodeH = 28;
    const at = (i, n) => 10 + (H - 20) * ((i + 0.5) / n);
    const node = (cx, cy, n, main) => {
      const g = s("a", { href: n.href || "#" });
      g.append(s("rect", { x: cx - nodeW / 2, y: cy - nodeH / 2, width: nodeW, height: nodeH, rx: 6,
        class: `node ${main ? "main" : healthOf(n.success)}` }));
      g.append(s("text", { x: cx, y: cy + 4, "text-anchor": "middle", class: "node-label" }, n.label));
      return g;
    };
    const cx = W / 2, cy = H / 2, lx = 100, rx = W - 100;
    const edge = (x1, y1, x2, y2, n, labelAtEnd) => {
      svg.append(s("path", { d: `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`,
        class: `edge ${healthOf(n.success)}`, "marker-end": "url(#arrow)" }));
      if (n.edgeLabel) {
        // beside the outer node, where edges do not crowd each other
        const [lx, ly, anchor] = labelAtEnd ? [x2 - 12, y2 - 7, "end"] : [x1 + 12, y1 - 7, "start"];
        svg.append(s("text", { x: lx, y: ly, "text-anchor": anchor, class: `edge-label ${healthOf(n.success)}` }, n.edgeLabel));
      }
    };
    svg.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
    callers.forEach((n, i) => edge(lx + nodeW / 2, at(i, callers.length), cx - nodeW / 2, cy, n, false));
    destinations.forEach((n, i) => edge(cx + nodeW / 2, cy, rx - nodeW / 2, at(i, destinations.length), n, true));
    callers.forEach((n, i) => svg.append(node(lx, at(i, callers.length), n)));
    destinations.forEach((n, i) => svg.append(node(rx, at(i, destinations.length), n)));
    svg.append(node(cx, cy, center, true));
    if (!callers.length) svg.append(s("text", { x: lx, y: cy + 4, "text-anchor": "middle", class: "axis" }, "no callers"));
    if (!destinations.length) svg.append(s("text", { x: rx, y: cy + 4, "text-anchor": "middle", class: "axis" }, "no destinations"));
    return svg;
  }

  /**
   * A namespace's call graph from edges ({src, dst, success, rps, href(name)}): workloads in
   * columns by call depth (those nobody calls on the left), arrows coloured by success.
   */
  function edgeGraph(names, edges, healthOf, hrefOf) {
    const depth = new Map(names.map((n) => [n, 0]));
    for (let pass = 0; pass < names.length; pass++) { // longest path, bounded: cycles stop growing
      for (const e of edges) {
        if (e.src !== e.dst && depth.has(e.src) && depth.has(e.dst) && depth.get(e.dst) < depth.get(e.src) + 1) {
          depth.set(e.dst, Math.min(depth.get(e.src) + 1, names.length));
        }
      }
    }
    const cols = [];
    for (const n of names) (cols[depth.get(n)] = cols[depth.get(n)] || []).push(n);
    const colsN = Math.max(cols.length, 1);
    const rowsN = Math.max(1, ...cols.filter(Boolean).map((c) => c.length));
    const W = 900, nodeW = 150, nodeH = 28, H = Math.max(rowsN * 56 + 20, 80);
    const pos = new Map();
    cols.forEach((c, i) => (c || []).forEach((n, j) => pos.set(n, [
      nodeW / 2 + 10 + (colsN === 1 ? 0 : (i * (W - nodeW - 20)) / (colsN - 1)), 10 + (H - 20) * ((j + 0.5) / c.length)])));
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "graph", role: "img", "aria-label": "namespace call graph" });
    svg.append(s("defs", {}, s("marker", { id: "arrow-ns", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));
    for (const e of edges) {
      const a = pos.get(e.src), b = pos.get(e.dst);
      if (!a || !b || e.src === e.dst) continue;
      const [x1, y1, x2, y2] = [a[0] + nodeW / 2, a[1], b[0] - nodeW / 2, b[1]];
      svg.append(s("path", { d: `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`,
        class: `edge ${healthOf(e.success)}`, "marker-end": "url(#arrow-ns)" }));
      if (e.label) svg.append(s("text", { x: x2 - 12, y: y2 - 7, "text-anchor": "end", class: `edge-label ${healthOf(e.success)}` }, e.label));
    }
    for (const [n, [x, y]] of pos) {
      const g = s("a", { href: hrefOf(n) });
      g.append(s("rect", { x: x - nodeW / 2, y: y - nodeH / 2, width: nodeW, height: nodeH, rx: 6, class: "node" }));
      g.append(s("text", { x, y: y + 4, "text-anchor": "middle", class: "node-label" }, n));
      svg.append(g);
    }
    if (!names.length) svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no workloads"));
    return svg;
  }

  return { line, golden, callGraph, edgeGraph };
})();
