// Ferry dashboard pages for rollouts: every rollout with its phase and step, and one
// rollout with canary vs stable against its thresholds, its step timeline and its history.
// Both read /api/v1/rollouts, as `ferry rollout status` does; the buttons are its actions.
"use strict";

(() => {
  const { h, api, every, route, section, note } = Ferry;

  const phaseClass = (p) => ({ Promoted: "good", Progressing: "good", Paused: "warn", RolledBack: "bad", Aborted: "bad" }[p] || "");
  const badge = (p) => h("span", { class: `badge ${phaseClass(p)}`, "data-phase": p }, p);
  const href = (r) => `#/rollout/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}`;
  const traffic = (r) => (r.traffic.matches ? "matching → canary" : `${r.traffic.canaryWeight}% canary`);
  const pct = (v) => (v === null || v === undefined ? "-" : `${v.toFixed(2)}%`);
  const time = (ms) => new Date(ms).toLocaleTimeString();

  function stepText(s) {
    const bake = s.bake ? `, bake ${s.bake}` : "";
    if (s.weight !== undefined) return `weight ${s.weight}%${bake}`;
    if (s.match) {
      const rules = (s.match.headers || []).map((x) => `${x.name} ${x.type} "${x.value}"`)
        .concat((s.match.cookies || []).map((c) => `cookie ${c.name}=${c.value}`));
      return `match ${rules.join(" and ")}${bake}`;
    }
    if (s.confirm) return `confirm (until ${s.confirm.url} answers 200)`;
    return "pause (until promoted)";
  }

  // --- the list ---------------------------------------------------------------------

  route(/^\/rollouts$/, (view) => {
    const table = Ferry.sortable([
      { key: "name", label: "Rollout", value: (r) => `${r.namespace}/${r.name}`, cell: (r) => h("a", { href: href(r) }, `${r.namespace}/${r.name}`) },
      { key: "phase", label: "Phase", value: (r) => r.status.phase, cell: (r) => badge(r.status.phase) },
      { key: "step", label: "Step", num: true, value: (r) => r.status.step, cell: (r) => `${Math.min(r.status.step, r.spec.steps.length)}/${r.spec.steps.length}` },
      { key: "traffic", label: "Traffic", value: traffic, cell: traffic },
      { key: "canary", label: "Canary", value: (r) => r.spec.canary.name, cell: (r) => r.spec.canary.name },
      { key: "stable", label: "Stable", value: (r) => r.spec.stable.name, cell: (r) => r.spec.stable.name },
      { key: "reason", label: "Reason", value: (r) => r.status.reason, cell: (r) => r.status.reason },
    ], { sort: "name", cls: "rollouts", empty: "No rollouts (ferry-control --rollouts).",
      rowAttrs: (r) => ({ "data-rollout": `${r.namespace}/${r.name}` }) });
    view.append(h("h1", {}, "Rollouts"),
      note("Progressive delivery: each rollout moves a Service's traffic to its canary in steps judged on the mesh's own metrics, and rolls back on its own."),
      h("div", { class: "scroll-x", id: "rollouts" }, table.el));
    every(2000, async () => table.update((await api("/api/v1/rollouts")).rollouts));
  }, "rollouts");

  // --- one rollout ------------------------------------------------------------------

  async function act(r, action, out) {
    const rsp = await fetch(`/api/v1/rollouts/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}/${action}`,
      { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
    const body = await rsp.json().catch(() => ({}));
    out.textContent = rsp.ok ? `${action}: ${body.status.phase} at step ${body.status.step}` : body.error || `${rsp.status}`;
    out.className = rsp.ok ? "muted" : "bad-text";
  }

  route(/^\/rollout\/([^/]+)\/([^/]+)$/, (view, [ns, name]) => {
    ns = decodeURIComponent(ns);
    name = decodeURIComponent(name);
    const head = h("div", { id: "rollout-head" });
    const actions = h("div", { class: "actions", id: "rollout-actions" });
    const said = h("p", { class: "muted", id: "rollout-said" });
    const charts = h("div", { class: "charts", id: "rollout-charts" });
    const steps = h("ol", { class: "timeline", id: "rollout-steps", start: 0 });
    const analyses = h("div", { class: "scroll-x", id: "rollout-analyses" });
    const history = h("div", { class: "scroll-x", id: "rollout-history" });
    view.append(h("h1", {}, `Rollout ${ns}/${name}`), head, actions, said,
      section("Canary vs stable", charts), section("Steps", steps),
      section("Analyses", analyses), section("History", history));
    let current = null;
    for (const a of ["promote", "pause", "resume", "abort", "start"]) {
      actions.append(h("button", { type: "button", id: `rollout-${a}`, onclick: () => current && act(current, a, said) }, a));
    }
    every(2000, async () => {
      const r = await api(`/api/v1/rollouts/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`);
      current = r;
      const s = r.status;
      head.replaceChildren(
        h("p", {}, badge(s.phase), ` step ${Math.min(s.step, r.spec.steps.length)}/${r.spec.steps.length} · ${traffic(r)} · canary `,
          h("b", {}, r.spec.canary.name), " vs stable ", h("b", {}, r.spec.stable.name), ` on svc/${r.spec.service.name}:${r.spec.service.port}`),
        h("p", { id: "rollout-reason" }, s.reason));
      const t = (r.spec.analysis || {});
      const sr = t.successRate || {};
      const lat = t.latencyP99 || {};
      const span = Math.max(60000, Date.now() - s.startedMs + 5000);
      const pts = (who, f) => s.analyses.map((a) => [a.atMs, f(a[who])]);
      const flat = (v) => (v === undefined ? null : [[s.startedMs, v], [Date.now(), v]]);
      const success = [{ label: "canary", cls: "s-canary", points: pts("canary", (f) => f.success) },
        { label: "stable", cls: "s-stable", points: pts("stable", (f) => f.success) }];
      if (flat(sr.min)) success.push({ label: "floor", cls: "s-threshold", points: flat(sr.min) });
      const latency = [{ label: "canary", cls: "s-canary", points: pts("canary", (f) => f.p99Ms) },
        { label: "stable", cls: "s-stable", points: pts("stable", (f) => f.p99Ms) }];
      if (flat(lat.maxMs)) latency.push({ label: "ceiling", cls: "s-threshold", points: flat(lat.maxMs) });
      charts.replaceChildren(
        Charts.line(success, { title: "Success rate (%)", unit: (v) => `${v.toFixed(0)}%`, min: 0, max: 100, spanMs: span }),
        Charts.line(latency, { title: "Latency p99", unit: Ferry.ms, spanMs: span }),
        Charts.line([{ label: "canary", cls: "s-canary", points: pts("canary", (f) => f.requests) }],
          { title: `Canary requests per window (min ${t.minRequests || 20})`, unit: (v) => v.toFixed(0), spanMs: span }));
      steps.replaceChildren(...r.spec.steps.map((st, i) => {
        const state = i < s.step ? "done" : i === s.step && !["Promoted", "RolledBack", "Aborted"].includes(s.phase) ? "current" : "pending";
        const judged = s.analyses.filter((a) => a.step === i);
        const verdict = judged.length ? ` · last analysis ${judged[judged.length - 1].verdict}` : "";
        return h("li", { class: `step ${state}`, "data-step": i }, stepText(st), h("span", { class: "muted" }, ` ${state}${verdict}`));
      }));
      const rows = s.analyses.slice(-20).reverse().map((a) => h("tr", { class: a.verdict === "Failed" ? "row-bad" : "" },
        h("td", {}, time(a.atMs)), h("td", {}, a.step), h("td", {}, a.canary.requests.toFixed(0)), h("td", {}, pct(a.canary.success)),
        h("td", {}, Ferry.ms(a.canary.p99Ms)), h("td", {}, pct(a.stable.success)), h("td", {}, Ferry.ms(a.stable.p99Ms)),
        h("td", {}, a.verdict), h("td", {}, a.reason)));
      analyses.replaceChildren(h("table", {}, h("tr", {}, ...["When", "Step", "Canary req", "Canary success", "Canary p99",
        "Stable success", "Stable p99", "Verdict", "Why"].map((c) => h("th", {}, c))), ...rows));
      history.replaceChildren(s.history.length ? h("table", {}, h("tr", {}, ...["Started", "Ended", "Outcome", "Step", "Canary", "Reason"].map((c) => h("th", {}, c))),
        ...s.history.slice().reverse().map((x) => h("tr", { "data-outcome": x.outcome }, h("td", {}, time(x.startedMs)), h("td", {}, time(x.endedMs)),
          h("td", {}, x.outcome), h("td", {}, x.step), h("td", {}, x.canary), h("td", {}, x.reason)))) : note("No finished runs yet."));
    });
  }, "rollouts");
})();
