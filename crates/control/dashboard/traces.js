// Ferry dashboard pages for traces: the list of kept traces with filters, and one trace as
// a waterfall. Both read /api/v1/traces, as `ferry trace` does.
"use strict";

(() => {
  const { h, api, every, route, section, note } = Ferry;

  /** Microseconds as `850µs`, `12.3ms` or `1.25s`, as `ferry trace` prints them. */
  function micros(us) {
    if (us < 1000) return `${us}µs`;
    if (us < 1e6) return `${(us / 1000).toFixed(1)}ms`;
    return `${(us / 1e6).toFixed(2)}s`;
  }
  function ago(startMicros) {
    const secs = Math.max(0, Math.round(Date.now() / 1000 - startMicros / 1e6));
    return `${Ferry.duration(secs)} ago`;
  }
  const statusBadge = (status, n) => h("span", { class: `badge ${status === "error" ? "bad" : "good"}` },
    status === "error" && n ? `error (${n})` : status);

  // --- the list ---------------------------------------------------------------------

  route(/^\/traces$/, (view, _m, params) => {
    const field = (name, label, placeholder, size) => h("label", {}, label,
      h("input", { name, id: `traces-${name}`, placeholder, size: size || 14, value: params.get(name) || "" }));
    const status = h("select", { name: "status", id: "traces-status" },
      ["", "error", "ok"].map((v) => h("option", { value: v, selected: params.get("status") === v }, v || "any")));
    const form = h("form", { class: "tap-form", id: "traces-form" },
      field("workload", "Workload", "web or emojivoto/web", 20),
      h("label", {}, "Status", status),
      field("minDuration", "Min duration", "250ms", 8),
      field("limit", "Limit", "100", 5),
      h("button", { type: "submit", id: "traces-apply" }, "Filter"));
    const stats = h("p", { class: "muted", id: "traces-stats" });
    const table = Ferry.sortable([
      { key: "traceId", label: "Trace", cell: (t) => h("a", { class: "mono", href: `#/trace/${t.traceId}` }, t.traceId.slice(0, 16)) },
      { key: "root", label: "Root", value: (t) => t.rootWorkload || t.rootService, cell: (t) => t.rootWorkload || t.rootService },
      { key: "rootName", label: "Name" },
      { key: "spanCount", label: "Spans", num: true },
      { key: "durationMicros", label: "Duration", num: true, cell: (t) => micros(t.durationMicros) },
      { key: "status", label: "Status", value: (t) => t.errorCount, cell: (t) => statusBadge(t.status, t.errorCount) },
      // By age, youngest first: newest traces on top, as the API lists them.
      { key: "age", label: "Started", num: true, value: (t) => -t.startUnixMicros, cell: (t) => ago(t.startUnixMicros) },
    ], { sort: "age", cls: "traces", empty: "No traces match.",
      rowAttrs: (t) => ({ "data-trace": t.traceId, class: t.status === "error" ? "row-bad" : "" }) });
    view.append(h("h1", {}, "Traces"),
      note("The most recent traces the control plane keeps from the spans proxies export over OTLP. Click one for its waterfall."),
      form, stats, h("div", { class: "scroll-x", id: "traces" }, table.el));

    const query = new URLSearchParams();
    for (const k of ["workload", "status", "minDuration", "limit"]) if (params.get(k)) query.set(k, params.get(k));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(form)) if (String(v).trim()) next.set(k, String(v).trim());
      location.hash = `#/traces?${next}`;
    });
    every(5000, async () => {
      let list;
      try {
        list = await api(`/api/v1/traces?${query}`);
      } catch (e) {
        if (e.status === 400) { stats.textContent = e.message; stats.className = "bad-text"; table.update([]); return; }
        throw e;
      }
      const s = list.stats;
      stats.className = "muted";
      stats.textContent = !s.receiving
        ? "The trace receiver is off (ferry-control --trace-listen)."
        : `${list.traces.length} shown of ${list.kept} kept · ${s.spansReceived} spans received` +
          (s.spansRejected ? ` · ${s.spansRejected} rejected` : "") +
          (s.spansForwarded || s.spansForwardDropped ? ` · ${s.spansForwarded} forwarded, ${s.spansForwardDropped} dropped` : "");
      table.update(list.traces);
    });
  }, "traces");

  // --- one trace --------------------------------------------------------------------

  route(/^\/trace\/([0-9a-fA-F]+)$/, (view, [id]) => {
    const head = h("div", { id: "trace-head" });
    const fall = h("div", { class: "waterfall", id: "waterfall" });
    view.append(h("p", { class: "crumbs" }, h("a", { href: "#/traces" }, "Traces"), " / ", h("span", { class: "mono" }, id)),
      h("h1", {}, "Trace"), head, section("Waterfall", fall));
    api(`/api/v1/traces/${id}`).then((trace) => {
      const s = trace.summary;
      const total = Math.max(1, s.durationMicros);
      head.replaceChildren(h("div", { class: "cards" },
        card("Root", `${s.rootWorkload || s.rootService}`), card("Name", s.rootName),
        card("Duration", micros(s.durationMicros)), card("Spans", String(s.spanCount)),
        card("Status", statusBadge(s.status, s.errorCount)),
        card("Started", new Date(s.startUnixMicros / 1000).toLocaleTimeString())));
      // A scale of five ticks over the trace's duration.
      const scale = h("div", { class: "wf-row wf-scale" }, h("div", { class: "wf-name" }, "Span"),
        h("div", { class: "wf-track" }, [0, 0.25, 0.5, 0.75, 1].map((f) =>
          h("span", { class: "wf-tick", style: `left:${f * 100}%` }, micros(Math.round(total * f))))));
      fall.replaceChildren(scale, ...trace.spans.map((sp) => {
        const left = (100 * sp.offsetMicros) / total;
        const width = Math.max(0.4, (100 * sp.durationMicros) / total);
        const attrs = Object.entries(sp.attributes || {});
        const detail = h("div", { class: "wf-detail", hidden: true },
          h("dl", {},
            h("dt", {}, "Span id"), h("dd", { class: "mono" }, sp.spanId),
            sp.parentSpanId ? [h("dt", {}, "Parent"), h("dd", { class: "mono" }, sp.parentSpanId)] : null,
            h("dt", {}, "Service"), h("dd", {}, `${sp.service}${sp.workload ? ` (${sp.workload})` : ""}`),
            h("dt", {}, "Kind"), h("dd", {}, sp.kind),
            h("dt", {}, "Start"), h("dd", {}, `+${micros(sp.offsetMicros)}`),
            sp.statusMessage ? [h("dt", {}, "Error"), h("dd", { class: "bad-text" }, sp.statusMessage)] : null,
            attrs.flatMap(([k, v]) => [h("dt", { class: "mono" }, k), h("dd", { class: "mono" }, v)])));
        const row = h("div", {
          class: `wf-row${sp.status === "error" ? " wf-error" : ""}`, "data-span": sp.spanId, "data-depth": sp.depth,
          onclick: () => { detail.hidden = !detail.hidden; },
        },
        h("div", { class: "wf-name", style: `padding-left:${8 + 14 * Math.min(sp.depth, 20)}px`, title: sp.name },
          h("span", { class: `wf-kind ${sp.kind}` }, sp.kind === "server" ? "in" : sp.kind === "client" ? "out" : sp.kind.slice(0, 3)), " ",
          sp.name, " ", h("span", { class: "muted" }, sp.service)),
        h("div", { class: "wf-track" },
          h("div", { class: "wf-bar", style: `left:${Math.min(left, 99.6)}%;width:${Math.min(width, 100 - Math.min(left, 99.6))}%` }),
          // Beside the bar, or inside its end when the bar reaches the right edge.
          left + width > 88
            ? h("span", { class: "wf-dur inside", style: `right:${Math.max(0, 100 - left - width)}%` }, micros(sp.durationMicros))
            : h("span", { class: "wf-dur", style: `left:${left + width}%` }, micros(sp.durationMicros))));
        return h("div", {}, row, detail);
      }));
    }).catch((e) => {
      head.replaceChildren(h("p", { class: "bad-text", id: "trace-error" }, e.message));
      fall.replaceChildren(note("The store keeps the most recent traces only."));
    });

    function card(label, value) {
      return h("div", { class: "card" }, h("div", { class: "card-label" }, label), h("div", { class: "card-value" }, value));
    }
  }, "traces");
})();
