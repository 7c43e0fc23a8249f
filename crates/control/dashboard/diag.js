// Ferry dashboard pages for live requests and diagnostics: tap, proxies, check.
"use strict";

(() => {
  const { h, api, every, onLeave, route, section, note, duration, markLive } = Ferry;
  const MAX_ROWS = 300;

  // --- tap --------------------------------------------------------------------------

  route(/^\/tap$/, (view, _m, params) => {
    const field = (name, label, placeholder, size) => h("label", {}, label,
      h("input", { name, id: `tap-${name}`, placeholder, size: size || 18, value: params.get(name) || "" }));
    const form = h("form", { class: "tap-form", id: "tap-form" },
      field("resource", "Resource", "deploy/voting"),
      field("namespace", "Namespace", "default", 12),
      field("to", "To", "deploy/emoji", 14),
      field("toNamespace", "To namespace", "(same)", 10),
      field("path", "Path prefix", "/", 14),
      field("method", "Method", "GET", 6),
      field("authority", "Authority", "emoji-svc:8080", 14),
      field("maxRps", "Max RPS", "100", 5),
      field("limit", "Limit", "∞", 5),
      h("button", { type: "submit", id: "tap-start" }, "Start"),
      h("button", { type: "button", id: "tap-stop", disabled: true, onclick: () => stop("stopped") }, "Stop"));
    const status = h("p", { class: "muted", id: "tap-status" }, "Not tapping. Proxies do no tap work until you start.");
    const tbody = h("tbody", { id: "tap-rows" });
    const table = h("table", { class: "grid tap" },
      h("thead", {}, h("tr", {}, ["Time", "Dir", "Pod", "From", "To", "Method", "Path", "Status", "Latency", "gRPC", "TLS"].map((t) => h("th", {}, t)))),
      tbody);
    view.append(h("h1", {}, "Live tap"), form, status, h("div", { class: "scroll-x" }, table));

    let source = null;
    const byId = new Map();
    let count = 0, failures = 0;
    function stop(why) {
      if (source) { source.close(); source = null; }
      form.querySelector("#tap-start").disabled = false;
      form.querySelector("#tap-stop").disabled = true;
      if (why) status.textContent = `Tap ${why}: ${count} requests, ${failures} failed.`;
    }
    onLeave(() => stop());

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      stop();
      const data = new FormData(form);
      const query = new URLSearchParams();
      for (const [k, v] of data) if (String(v).trim()) query.set(k, String(v).trim());
      if (!query.get("resource")) { status.textContent = "Name a resource to tap, e.g. deploy/voting."; return; }
      history.replaceState(null, "", `#/tap?${query}`);
      tbody.replaceChildren();
      byId.clear();
      count = 0; failures = 0;
      source = new EventSource(`/api/v1/tap?${query}`);
      form.querySelector("#tap-start").disabled = true;
      form.querySelector("#tap-stop").disabled = false;
      status.textContent = `Tapping ${query.get("resource")}… waiting for requests.`;
      source.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (e) { console.warn(e); } };
      source.addEventListener("tap-error", (m) => {
        let text = m.data;
        try { text = JSON.parse(m.data).error; } catch (_) { /* plain text */ }
        status.textContent = `Tap problem: ${text}`;
      });
      const limit = Number(query.get("limit")) || 0;
      source.onerror = () => {
        if (!source) return;
        // The stream ends by itself after `limit` requests; EventSource would start it again.
        if (limit && count >= limit) { stop(`ended after its limit of ${limit}`); return; }
        if (source.readyState === EventSource.CLOSED) { stop("ended"); markLive(false, "tap stream closed"); return; }
        status.textContent = `Tap interrupted; reconnecting… (${count} requests so far, ${failures} failed)`;
      };
    });

    // A peer by its workload when discovery labelled it, else by its mTLS identity's
    // service account, else by address.
    const peer = (p, identity) => {
      const l = (p && p.labels) || {};
      const who = l.deployment ? `deploy/${l.deployment}` : l.pod ? `po/${l.pod}` : l.service ? `svc/${l.service}` : "";
      if (who) return who;
      if (identity) return `sa/${identity.split(".")[0]}`;
      return (p && p.addr) || "-";
    };

    function onEvent(ev) {
      const key = `${ev.tappedNamespace}/${ev.tappedPod}/${ev.id}`;
      let row = byId.get(key);
      if (!row) {
        if (ev.type !== "req") return; // the head was throttled away: skip the rest too
        count += 1;
        const cells = {};
        const td = (k, v, cls) => (cells[k] = h("td", { class: cls || "" }, v ?? ""));
        const tr = h("tr", { class: "tap-row" },
          td("time", new Date().toLocaleTimeString()), td("dir", ev.proxyDirection === "inbound" ? "in" : "out"),
          td("pod", ev.tappedPod), td("from", peer(ev.source, ev.clientId)), td("to", peer(ev.destination, ev.serverId)),
          td("method", ev.method), td("path", ev.path, "mono path"), td("status", "…"), td("latency", "", "num"),
          td("grpc", ""), td("tls", ev.tls === "true" ? "mTLS" : "plain"));
        cells.path.title = ev.path || "";
        if (ev.tls !== "true") cells.tls.title = ev.tls;
        row = { tr, cells };
        byId.set(key, row);
        tbody.prepend(tr);
        while (tbody.children.length > MAX_ROWS) {
          const last = tbody.lastChild;
          for (const [k, r] of byId) if (r.tr === last) byId.delete(k);
          last.remove();
        }
        status.textContent = `Tapping: ${count} requests seen, ${failures} failed.`;
        return;
      }
      if (ev.type === "rsp") {
        row.cells.status.textContent = ev.status ?? "";
        if (ev.latencyMicros !== undefined) row.cells.latency.textContent = `${(ev.latencyMicros / 1000).toFixed(1)}ms`;
        if (ev.status >= 500) fail(row);
        proxyMade(row, ev.proxyError);
      } else if (ev.type === "end") {
        proxyMade(row, ev.proxyError);
        if (ev.grpcStatus !== undefined && ev.grpcStatus !== null) {
          row.cells.grpc.textContent = ev.grpcStatus;
          if (ev.grpcStatus !== 0) fail(row);
        }
        if (ev.resetError !== undefined && ev.resetError !== null) { row.cells.grpc.textContent = `reset ${ev.resetError}`; fail(row); }
        byId.delete(`${ev.tappedNamespace}/${ev.tappedPod}/${ev.id}`);
      }
    }
    // A response a proxy made itself (its l5d-proxy-error reason): a badge in the status
    // cell, "denied by policy" for authorization reasons, "proxy" for the others (no route,
    // connect timeout, rate limit...), so it reads apart from the application's own 403.
    function proxyMade(row, reason) {
      if (!reason || row.tr.dataset.proxyError) return;
      const denied = reason === "unauthorized" || reason.startsWith("unauthorized-");
      row.tr.dataset.proxyError = reason;
      row.tr.classList.add(denied ? "denied" : "proxy-made");
      row.cells.status.append(" ", h("span", {
        class: `badge proxy-error ${denied ? "bad" : "warn"}`,
        title: `made by the proxy, not the application (l5d-proxy-error: ${reason})`,
      }, denied ? `denied by policy: ${reason}` : `proxy: ${reason}`));
    }
    function fail(row) {
      if (row.tr.classList.contains("failed")) return;
      row.tr.classList.add("failed");
      failures += 1;
      status.textContent = `Tapping: ${count} requests seen, ${failures} failed.`;
    }

    if (params.get("resource")) form.requestSubmit();
  }, "tap");

  // --- proxies ----------------------------------------------------------------------

  /** Finds certificate expiries anywhere in a /state document: keys mentioning not_after/expir. */
  function expiries(state, path, out) {
    if (!state || typeof state !== "object") return out;
    for (const [k, v] of Object.entries(state)) {
      const here = path ? `${path}.${k}` : k;
      if (/not_?after|expir/i.test(k) && (typeof v === "string" || typeof v === "number")) out.push([here, v]);
      else if (typeof v === "object") expiries(v, here, out);
    }
    return out;
  }

  /** The certificate's expiry as "<notAfter> (in 23h59m)", from /state's identity. */
  function certExpiry(st, short) {
    const cert = st.identity && st.identity.certificate;
    if (cert && cert.not_after) {
      const left = cert.expires_in_seconds;
      if (left === undefined) return cert.not_after;
      const when = left > 0 ? `in ${duration(left)}` : "EXPIRED";
      return short ? h("span", { title: cert.not_after, class: left > 3600 ? "" : "bad-text" }, when) : `${cert.not_after} (${when})`;
    }
    const found = expiries(st, "", []);
    return found.length ? String(found[0][1]) : null;
  }

  route(/^\/proxies$/, (view, _m, params) => {
    const summary = h("div");
    const list = h("div", { id: "proxies" });
    view.append(h("h1", {}, "Proxies"),
      note("Each instance's proxy as the control plane reads it from the proxy's admin server (/ready and /state). Click a row for its known endpoints."),
      section("All proxies", summary), list);
    const only = params.get("pod");
    every(5000, async () => {
      const { proxies } = await api("/api/v1/proxies");
      summary.replaceChildren(h("div", { class: "scroll-x" }, h("table", { class: "grid compact" },
        h("thead", {}, h("tr", {}, ["Pod", "Workload", "State", "Version", "Identity", "Certificate expiry", "Destinations"].map((t) => h("th", {}, t)))),
        h("tbody", {}, proxies.map((p) => {
          const st = p.state || {};
          return h("tr", { "data-pod": p.pod },
            h("td", {}, h("a", { href: `#/proxies?pod=${encodeURIComponent(p.pod)}`, title: `namespace ${p.namespace}` }, p.pod)),
            h("td", {}, p.workload ? `${Ferry.resource(p.workloadKind, p.workload)}` : "-"),
            h("td", {}, h("span", { class: `badge ${p.ready ? "good" : "bad"}`, title: p.error || "" }, p.ready ? "ready" : "down")),
            h("td", {}, st.version || "-"),
            h("td", { class: "mono" }, p.identity || "-"),
            h("td", { class: "cert" }, certExpiry(st, true) || h("span", { class: "muted" }, st.identity ? "waiting for a certificate" : "no mTLS certificate")),
            h("td", { class: "num" }, String((st.destinations || []).length)));
        })))));
      list.replaceChildren(...proxies.filter((p) => !only || p.pod === only).map((p) => {
        const st = p.state || {};
        const dests = st.destinations || [];
        return h("details", { class: "proxy", open: !!only || proxies.length <= 3, "data-pod": p.pod },
          h("summary", {},
            h("span", { class: `badge ${p.ready ? "good" : "bad"}` }, p.ready ? "ready" : "down"), " ",
            h("strong", {}, `${p.namespace}/${p.pod}`), " ",
            h("span", { class: "muted" }, p.workload ? `${p.workloadKind}/${p.workload}` : "", st.version ? ` · v${st.version}` : "",
              st.uptime_seconds !== undefined ? ` · up ${duration(st.uptime_seconds)}` : "")),
          h("dl", {},
            h("dt", {}, "Identity"), h("dd", { class: "mono" }, (st.identity && (st.identity.name || st.identity.dns_name)) || p.identity || "none (not meshed)"),
            h("dt", {}, "Certificate expiry"), h("dd", { class: "mono" }, certExpiry(st) || h("span", { class: "muted" }, st.identity ? "no certificate yet" : "no certificate in /state (mTLS not enabled on this proxy)")),
            st.identity && st.identity.trust_anchors ? [h("dt", {}, "Trust anchors"), h("dd", { class: "mono" }, st.identity.trust_anchors.map((a) => a.subject).join(", "))] : null,
            h("dt", {}, "Admin / tap"), h("dd", { class: "mono" }, `${p.adminAddr || "-"} / ${p.tapAddr || "-"}`),
            p.error ? [h("dt", {}, "Problem"), h("dd", { class: "bad-text" }, p.error)] : null,
            h("dt", {}, "Open connections"), h("dd", {}, String((st.connections || []).length))),
          h("h3", {}, "Known endpoints"),
          dests.length ? h("table", { class: "grid compact" },
            h("thead", {}, h("tr", {}, ["Destination", "State", "Endpoint", "Identity", "In flight", "EWMA"].map((t) => h("th", {}, t)))),
            h("tbody", {}, dests.flatMap((d) => (d.endpoints && d.endpoints.length ? d.endpoints : [{}]).map((e, i) => h("tr", {},
              h("td", { class: "mono" }, i ? "" : d.name), h("td", {}, i ? "" : d.state || ""),
              h("td", { class: "mono" }, e.addr || "-"), h("td", { class: "mono" }, e.identity || e.tls_identity || "-"),
              h("td", { class: "num" }, e.in_flight ?? ""), h("td", { class: "num" }, e.ewma_ms !== undefined ? `${Number(e.ewma_ms).toFixed(1)}ms` : "")))))
          ) : h("p", { class: "muted" }, "no destinations resolved through the control plane"));
      }));
      if (!proxies.length) list.append(note("No instances are known to discovery."));
    });
  }, "proxies");

  // --- check ------------------------------------------------------------------------

  route(/^\/check$/, (view) => {
    const out = h("div", { id: "checks" });
    view.append(h("h1", {}, "Check"), note("The checks of ferry check --local, run by the control plane on itself and its proxies."), out);
    every(5000, async () => {
      const report = await api("/api/v1/check");
      const failed = report.checks.filter((c) => !c.ok).length;
      const skipped = report.planned - report.checks.length;
      out.replaceChildren(
        h("ul", { class: "checks" }, report.checks.map((c) => h("li", { class: c.ok ? "pass" : "fail", "data-check": c.name },
          h("span", { class: "mark" }, c.ok ? "✓" : "×"), " ", h("strong", {}, c.name), ": ", c.text,
          c.hint ? h("div", { class: "hint" }, `hint: ${c.hint}`) : null))),
        h("p", { class: failed ? "bad-text" : "good-text", id: "check-summary" }, failed === 0
          ? `all ${report.checks.length} checks passed`
          : skipped > 0 ? `${failed} check(s) failed; ${skipped} skipped after a fatal failure`
            : `${failed} of ${report.checks.length} check(s) failed`));
    });
  }, "check");
})();
