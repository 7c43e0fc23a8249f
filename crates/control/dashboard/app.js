// Ferry dashboard core: the hash router, API fetches, formatting and the sortable table.
// No libraries and no build step: every page is built with `h()` from the public API.
"use strict";

const Ferry = (() => {
  const routes = [];
  let timers = [];
  let cleanups = [];

  /** Creates an element: h("a", {href: "#/"}, "text", child...). Strings become text. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  /** Fetches JSON; rejects with the API's `error` text on non-2xx answers. */
  async function api(path) {
    const rsp = await fetch(path, { cache: "no-store" });
    const text = await rsp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
    if (!rsp.ok) {
      const err = new Error((body && body.error) || `${rsp.status} ${rsp.statusText} for ${path}`);
      err.status = rsp.status;
      throw err;
    }
    markLive(true);
    return body;
  }

  let lastHeard = null;
  /** The badge at the top right, and the page dimmed while the control plane is away. */
  function markLive(ok, why) {
    const live = document.getElementById("live");
    if (!live) return;
    document.body.classList.toggle("stale", !ok);
    if (ok) lastHeard = new Date();
    live.className = ok ? "live ok" : "live bad";
    live.title = ok ? "when the page last heard from the control plane" : `${why || "no answer"}`;
    live.textContent = ok ? `live · ${lastHeard.toLocaleTimeString()}`
      : `control plane unreachable${lastHeard ? ` since ${lastHeard.toLocaleTimeString()}` : ""}`;
  }

  /** Runs `fn` now and every `ms` until the route changes. Errors show in the live badge. */
  function every(ms, fn) {
    // One refresh at a time: a slow control plane is not sent a growing queue of requests.
    let busy = false;
    const run = () => {
      if (busy) return;
      busy = true;
      Promise.resolve().then(fn).catch((e) => {
        if (e && e.status === undefined) markLive(false, e.message);
        console.warn(e);
      }).finally(() => { busy = false; });
    };
    run();
    timers.push(setInterval(run, ms));
  }

  /** Registers something to undo when the route changes (an EventSource, ...). */
  function onLeave(fn) { cleanups.push(fn); }

  function route(pattern, render, nav) { routes.push({ pattern, render, nav }); }

  function dispatch() {
    timers.forEach(clearInterval);
    timers = [];
    cleanups.forEach((f) => { try { f(); } catch (_) { /* already closed */ } });
    cleanups = [];
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const params = new URLSearchParams(query || "");
    const view = document.getElementById("view");
    view.replaceChildren();
    for (const r of routes) {
      const m = path.match(r.pattern);
      if (!m) continue;
      document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === r.nav));
      r.render(view, m.slice(1).map(decodeURIComponent), params);
      return;
    }
    view.append(h("p", {}, "No such page. ", h("a", { href: "#/" }, "Back to the overview")));
  }

  // --- formatting -------------------------------------------------------------------

  /** Success as a percentage with two decimals, as `ferry stat` prints it; "-" without traffic. */
  function pct(x) { return x === null || x === undefined ? "-" : `${(x * 100).toFixed(2)}%`; }
  function rps(x) { return x === null || x === undefined ? "-" : `${Number(x).toFixed(1)}rps`; }
  function ms(x) { return x === null || x === undefined ? "-" : `${Math.round(x)}ms`; }
  /** good / warn / bad / none, by success rate. */
  function health(success) {
    if (success === null || success === undefined) return "none";
    if (success >= 0.95) return "good";
    if (success >= 0.8) return "warn";
    return "bad";
  }
  function duration(secs) {
    if (secs < 60) return `${secs}s`;
    if (secs < 3600) return `${Math.floor(secs / 60)}m${secs % 60}s`;
    return `${Math.floor(secs / 3600)}h${Math.floor((secs % 3600) / 60)}m`;
  }
  const shortKind = { deployment: "deploy", statefulset: "sts", daemonset: "ds", namespace: "ns", pod: "po", service: "svc" };
  function resource(kind, name) { return `${shortKind[kind] || kind}/${name}`; }
  function workloadHref(ns, kind, name) { return `#/workload/${encodeURIComponent(ns)}/${encodeURIComponent(kind)}/${encodeURIComponent(name)}`; }

  /** Rows of a stat answer, whether it is a list or an object with `rows`. */
  function rows(body) { return Array.isArray(body) ? body : (body && (body.rows || body.stats || body.items)) || []; }

  /**
   * A table sortable by clicking its headers. `cols`: {key, label, value(row), cell(row), num}.
   * Returns {el, update(rows)}; the sort survives updates.
   */
  function sortable(cols, opts) {
    const state = { key: (opts && opts.sort) || cols[0].key, desc: false, rows: [] };
    const thead = h("thead");
    const tbody = h("tbody");
    const table = h("table", { class: "grid" + (opts && opts.cls ? ` ${opts.cls}` : "") }, thead, tbody);
    function header() {
      thead.replaceChildren(h("tr", {}, cols.map((c) => h("th", {
        class: (c.num ? "num " : "") + "sortable" + (state.key === c.key ? (state.desc ? " desc" : " asc") : ""),
        "data-col": c.key,
        onclick: () => { state.desc = state.key === c.key ? !state.desc : !!c.num; state.key = c.key; draw(); },
      }, c.label))));
    }
    function draw() {
      header();
      const col = cols.find((c) => c.key === state.key) || cols[0];
      const val = col.value || ((r) => r[col.key]);
      const sorted = [...state.rows].sort((a, b) => {
        const x = val(a), y = val(b);
        const nx = x === null || x === undefined, ny = y === null || y === undefined;
        if (nx || ny) return nx && ny ? 0 : nx ? 1 : -1; // no data sorts last either way
        const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return state.desc ? -c : c;
      });
      tbody.replaceChildren(...sorted.map((r) => {
        const tr = h("tr", (opts && opts.rowAttrs && opts.rowAttrs(r)) || {});
        for (const c of cols) tr.append(h("td", { class: c.num ? "num" : "" }, c.cell ? c.cell(r) : (r[c.key] ?? "-")));
        return tr;
      }));
      if (!sorted.length && opts && opts.empty) tbody.append(h("tr", {}, h("td", { colspan: cols.length, class: "muted" }, opts.empty)));
    }
    draw();
    return { el: table, update(rows) { state.rows = rows; draw(); } };
  }

  /** The golden-metric columns shared by every stat table. */
  function metricCols() {
    return [
      { key: "success", label: "Success", num: true, value: (r) => r.success,
        cell: (r) => h("span", { class: `rate ${health(r.success)}`, "data-success": r.success ?? "" }, pct(r.success)) },
      { key: "rps", label: "RPS", num: true, cell: (r) => rps(r.rps) },
      { key: "p50", label: "P50", num: true, value: (r) => r.latencyMs && r.latencyMs.p50, cell: (r) => ms(r.latencyMs && r.latencyMs.p50) },
      { key: "p95", label: "P95", num: true, value: (r) => r.latencyMs && r.latencyMs.p95, cell: (r) => ms(r.latencyMs && r.latencyMs.p95) },
      { key: "p99", label: "P99", num: true, value: (r) => r.latencyMs && r.latencyMs.p99, cell: (r) => ms(r.latencyMs && r.latencyMs.p99) },
    ];
  }

  function section(title, ...body) { return h("section", {}, h("h2", {}, title), ...body); }
  function note(text) { return h("p", { class: "muted note" }, text); }

  function start() {
    window.addEventListener("hashchange", dispatch);
    dispatch();
  }

  return { h, api, every, onLeave, route, start, pct, rps, ms, health, duration, resource, shortKind,
    workloadHref, rows, sortable, metricCols, section, note, markLive };
})();
