// Ferry dashboard pages over the stat API: the overview, a namespace, a workload.
"use strict";

(() => {
  const { h, api, every, route, pct, rps, ms, health, duration, resource, workloadHref, rows,
    sortable, metricCols, section, note } = Ferry;
  const REFRESH_MS = 2000;
  const HISTORY_MS = 5000;

  const q = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== undefined && v !== null && v !== "")).toString();
  const stat = (o) => api(`/api/v1/stat?${q(o)}`).then(rows);

  function statError(el, e) {
    el.replaceChildren(note(e.status === 404
      ? "The stat API is not available on this control plane yet: golden metrics will appear once it is."
      : `Cannot read golden metrics: ${e.message}`));
  }

  function meshedCell(m) {
    if (!m) return "-";
    return h("span", { class: m.total && m.ready === m.total ? "" : "warn-text" }, `${m.ready}/${m.total}`);
  }

  // --- overview ---------------------------------------------------------------------

  route(/^\/$/, (view) => {
    const cp = h("div", { class: "cards" });
    const comps = h("div");
    const nsTable = sortable([
      { key: "name", label: "Namespace", cell: (r) => h("a", { href: `#/ns/${encodeURIComponent(r.name)}` }, r.name) },
      { key: "meshed", label: "Meshed", value: (r) => r.meshedWorkloads, cell: (r) => meshedCell({ ready: r.meshedWorkloads, total: r.workloads }) },
      ...metricCols(),
    ], { empty: "no namespaces", rowAttrs: (r) => ({ "data-namespace": r.name }) });
    const wlTable = sortable([
      { key: "namespace", label: "Namespace" },
      { key: "name", label: "Workload", cell: (r) => h("a", { href: workloadHref(r.namespace, r.kind, r.name), class: "wl-link" }, resource(r.kind, r.name)) },
      { key: "meshed", label: "Meshed", value: (r) => r.meshed && r.meshed.ready, cell: (r) => meshedCell(r.meshed) },
      ...metricCols(),
      { key: "tcpConnections", label: "TCP", num: true, cell: (r) => r.tcpConnections ?? "-" },
    ], { sort: "namespace", cls: "workloads", empty: "no workloads discovered", rowAttrs: (r) => ({ "data-workload": `${r.namespace}/${r.name}`, class: `row-${health(r.success)}` }) });
    const statNote = h("div");
    view.append(
      h("h1", {}, "Overview"),
      section("Control plane", cp, comps),
      section("Workloads", statNote, wlTable.el),
      section("Namespaces", nsTable.el),
    );
    every(REFRESH_MS, async () => {
      const ov = await api("/api/v1/overview");
      cp.replaceChildren(
        card("Status", h("span", { class: `badge ${ov.status === "ok" ? "good" : "bad"}`, id: "cp-status" }, ov.status)),
        card("Version", ov.version),
        card("Uptime", duration(ov.uptimeSeconds)),
        card("Proxies ready", h("span", { id: "proxies-ready" }, `${ov.proxiesReady}/${ov.proxiesKnown}`)),
      );
      comps.replaceChildren(h("div", { class: "chips" }, ov.components.map((c) => h("span", {
        class: `chip ${c.status === "up" ? "good" : c.status === "off" ? "none" : "bad"}`, "data-component": c.name, title: c.detail },
        h("strong", {}, c.name), ` ${c.status}`, h("span", { class: "chip-detail" }, ` · ${c.detail}`)))));
      const kinds = [...new Set(ov.workloads.map((w) => w.kind))];
      let statRows = [];
      let nsRows = [];
      try {
        statRows = (await Promise.all(kinds.map((kind) => stat({ kind, allNamespaces: true })))).flat();
        nsRows = await stat({ kind: "ns", allNamespaces: true });
        statNote.replaceChildren();
      } catch (e) { statError(statNote, e); }
      const byKey = new Map(statRows.map((r) => [`${r.namespace}/${r.kind}/${r.name}`, r]));
      wlTable.update(ov.workloads.map((w) => Object.assign(
        { namespace: w.namespace, name: w.name, kind: w.kind, meshed: { ready: w.meshedInstances, total: w.instances }, success: null },
        byKey.get(`${w.namespace}/${w.kind}/${w.name}`) || {})));
      const nsStat = new Map(nsRows.map((r) => [r.name, r]));
      nsTable.update(ov.namespaces.map((n) => Object.assign({ success: null }, nsStat.get(n.name) || {},
        { name: n.name, workloads: n.workloads, meshedWorkloads: n.meshed })));
    });
  }, "overview");

  function card(label, value) {
    return h("div", { class: "card" }, h("div", { class: "card-label" }, label), h("div", { class: "card-value" }, value));
  }

  // --- history charts ---------------------------------------------------------------

  /** Charts for `resource` in `namespace`, refreshed from /stat/history. */
  function historyCharts(res, namespace) {
    const box = h("div", { class: "charts" });
    every(HISTORY_MS, async () => {
      try {
        const hist = await api(`/api/v1/stat/history?${q({ resource: res, namespace, range: "15m" })}`);
        box.replaceChildren(...Charts.golden(hist.points || [], 15 * 60 * 1000));
      } catch (e) {
        box.replaceChildren(note(e.status === 404 ? "History is not available on this control plane yet." : `Cannot read history: ${e.message}`));
      }
    });
    return box;
  }

  // --- namespace --------------------------------------------------------------------

  route(/^\/ns\/([^/]+)$/, (view, [ns]) => {
    const statNote = h("div");
    const wl = sortable([
      { key: "name", label: "Workload", cell: (r) => h("a", { href: workloadHref(r.namespace, r.kind, r.name) }, resource(r.kind, r.name)) },
      { key: "meshed", label: "Meshed", value: (r) => r.meshed && r.meshed.ready, cell: (r) => meshedCell(r.meshed) },
      ...metricCols(),
    ], { empty: "no traffic in this namespace", rowAttrs: (r) => ({ "data-workload": `${r.namespace}/${r.name}` }) });
    const edges = sortable([
      { key: "src", label: "From", cell: (r) => h("a", { href: workloadHref(r.srcNamespace, r.kind, r.src) }, resource(r.kind, r.src)) },
      { key: "dst", label: "To", cell: (r) => h("a", { href: workloadHref(r.dstNamespace, r.kind, r.dst) }, resource(r.kind, r.dst)) },
      { key: "rps", label: "RPS", num: true, cell: (r) => rps(r.rps) },
      { key: "secured", label: "mTLS", cell: (r) => (r.secured ? "mTLS" : `no (${r.noTlsReason || "plaintext"})`) },
    ], { empty: "no edges seen in the last minute" });
    const graph = h("div", { class: "graph-box", id: "ns-graph" });
    view.append(
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " › ", `namespace ${ns}`),
      h("h1", {}, `ns/${ns}`),
      section("Workloads", statNote, wl.el),
      section("Call graph", graph),
      section("Edges", edges.el),
      section("History (up to the last 15 minutes)", historyCharts(`ns/${ns}`, ns)),
    );
    every(REFRESH_MS, async () => {
      try {
        const rowsNow = await stat({ kind: "deploy", namespace: ns });
        wl.update(rowsNow);
        statNote.replaceChildren();
        const e = (await api(`/api/v1/edges?${q({ kind: "deploy", namespace: ns })}`)).edges || [];
        edges.update(e);
        // Success per edge is the destination as seen from the source: stat --from.
        const local = e.filter((x) => x.srcNamespace === ns && x.dstNamespace === ns);
        const fromRows = await Promise.all([...new Set(local.map((x) => x.src))].map(async (src) =>
          [src, await stat({ kind: "deploy", namespace: ns, from: `deploy/${src}` })]));
        const success = new Map(fromRows.flatMap(([src, rs]) => rs.map((r) => [`${src}>${r.name}`, r])));
        graph.replaceChildren(Charts.edgeGraph(rowsNow.map((r) => r.name), local.map((x) => {
          const r = success.get(`${x.src}>${x.dst}`);
          return { src: x.src, dst: x.dst, success: r ? r.success : null, label: r && r.success !== null ? `${pct(r.success)} · ${rps(r.rps)}` : "" };
        }), health, (n) => workloadHref(ns, "deployment", n)));
      } catch (e) { statError(statNote, e); }
    });
  }, "overview");

  // --- workload ---------------------------------------------------------------------

  route(/^\/workload\/([^/]+)\/([^/]+)\/([^/]+)$/, (view, [ns, kind, name]) => {
    const res = resource(kind, name);
    const golden = h("div", { class: "cards" });
    const statNote = h("div");
    const graph = h("div", { class: "graph-box" });
    const peerCols = (dir) => [
      { key: "name", label: dir === "in" ? "Caller" : "Destination",
        cell: (r) => h("a", { href: workloadHref(r.namespace, r.kind, r.name), class: "peer-link" }, resource(r.kind, r.name)) },
      { key: "namespace", label: "Namespace" },
      ...metricCols(),
    ];
    const inbound = sortable(peerCols("in"), { empty: "no callers in the last minute", cls: "inbound",
      rowAttrs: (r) => ({ "data-peer": r.name, class: `row-${health(r.success)}` }) });
    const outbound = sortable(peerCols("out"), { empty: "no destinations in the last minute", cls: "outbound",
      rowAttrs: (r) => ({ "data-peer": r.name, class: `row-${health(r.success)}` }) });
    const pods = h("div");
    // The routes this workload's proxies apply: effective and actual figures, and each
    // rule's backends with their weights as the control plane serves them now.
    const routesNote = h("div");
    const weights = new Map();
    const routes = sortable([
      { key: "route", label: "Route", cell: (r) => h("span", { class: "mono" }, r.route) },
      { key: "service", label: "Service", cell: (r) => h("span", { class: "mono" }, r.service) },
      ...metricCols(),
      { key: "retriesPerSec", label: "Retries", num: true, cell: (r) => rps(r.retriesPerSec) },
      { key: "actualSuccess", label: "Actual success", num: true, cell: (r) => pct(r.actualSuccess) },
      { key: "backends", label: "Backends (weight)", value: (r) => weights.get(`${r.service} ${r.route}`) || "",
        cell: (r) => h("span", { class: "weights" }, weights.get(`${r.service} ${r.route}`) || "-") },
    ], { empty: "no route traffic in the last minute", cls: "routes",
      rowAttrs: (r) => ({ "data-route": r.route, class: `row-${health(r.success)}` }) });
    const policyWeights = async (service, route) => {
      const [ns, rest] = service.split("/");
      const [svc, port] = rest.split(":");
      const policy = await api(`/api/v1/policy?${q({ authority: `${svc}.${ns}:${port}`, callerNamespace: ns })}`);
      const name = route.split("/").pop();
      const r = (policy.routes || []).find((x) => route === "default" ? x.kind === "default" : x.name === name);
      return r ? r.rules.filter((x) => (x.backends || []).length)
        .map((x) => x.backends.map((b) => `${b.name} ${b.weight}`).join(" · ")).join(" | ") : "";
    };
    view.append(
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " › ",
        h("a", { href: `#/ns/${encodeURIComponent(ns)}` }, `namespace ${ns}`), " › ", res),
      h("h1", {}, res, " ", h("a", { class: "button", href: `#/tap?${q({ resource: res, namespace: ns })}`, id: "tap-this" }, "Tap live requests")),
      statNote, golden,
      section("Call graph", graph),
      section("Outbound: destinations (ferry stat --from " + res + ")", outbound.el),
      section("Inbound: callers (ferry stat --to " + res + ")", inbound.el),
      section("Routes (ferry routes " + res + ")", routesNote, routes.el),
      section("History (up to the last 15 minutes)", historyCharts(res, ns)),
      section("Instances", pods),
    );
    every(REFRESH_MS, async () => {
      let me = null, ins = [], outs = [];
      try {
        [me] = await stat({ kind, name, namespace: ns });
        outs = await stat({ kind, namespace: ns, from: res });
        ins = await stat({ kind, namespace: ns, to: res });
        statNote.replaceChildren();
      } catch (e) { statError(statNote, e); }
      me = me || { success: null, latencyMs: {} };
      const lat = me.latencyMs || {};
      golden.replaceChildren(
        h("div", { class: "card" }, h("div", { class: "card-label" }, "Success"),
          h("div", { class: `card-value rate ${health(me.success)}`, id: "wl-success", "data-success": me.success ?? "" }, pct(me.success))),
        h("div", { class: "card" }, h("div", { class: "card-label" }, "RPS"), h("div", { class: "card-value" }, rps(me.rps))),
        h("div", { class: "card" }, h("div", { class: "card-label" }, "P50 / P95 / P99"),
          h("div", { class: "card-value" }, `${ms(lat.p50)} / ${ms(lat.p95)} / ${ms(lat.p99)}`)),
        h("div", { class: "card" }, h("div", { class: "card-label" }, "Meshed"),
          h("div", { class: "card-value" }, me.meshed ? `${me.meshed.ready}/${me.meshed.total}` : "-")),
      );
      inbound.update(ins);
      outbound.update(outs);
      try {
        const rs = (await api(`/api/v1/routes?${q({ kind, name, namespace: ns })}`)).rows || [];
        // Weights as served now: a route edit shows on the next refresh.
        await Promise.all(rs.map(async (r) =>
          weights.set(`${r.service} ${r.route}`, await policyWeights(r.service, r.route).catch(() => ""))));
        routes.update(rs);
        routesNote.replaceChildren();
      } catch (e) { statError(routesNote, e); }
      const node = (r) => ({ label: resource(r.kind, r.name), href: workloadHref(r.namespace, r.kind, r.name), success: r.success,
        edgeLabel: r.success === null || r.success === undefined ? "" : `${pct(r.success)} · ${rps(r.rps)}` });
      graph.replaceChildren(Charts.callGraph({ label: res, href: "#" + location.hash.slice(1), success: me.success },
        ins.map(node), outs.map(node), health));
    });
    every(5000, async () => {
      const ps = (await api(`/api/v1/proxies?${q({ namespace: ns })}`)).proxies.filter((p) => p.workload === name);
      pods.replaceChildren(h("table", { class: "grid compact" },
        h("thead", {}, h("tr", {}, ["Pod", "Ready", "Identity", "Admin"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ps.length ? ps.map((p) => h("tr", {},
          h("td", {}, h("a", { href: `#/proxies?pod=${encodeURIComponent(p.pod)}` }, p.pod)),
          h("td", {}, h("span", { class: `badge ${p.ready ? "good" : "bad"}` }, p.ready ? "ready" : "down")),
          h("td", { class: "mono" }, p.identity || "-"), h("td", { class: "mono" }, p.adminAddr || "-")))
          : h("tr", {}, h("td", { colspan: 4, class: "muted" }, "no instances")))));
    });
  }, "overview");
})();
