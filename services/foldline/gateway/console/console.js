// The foldline console: aggregates and views of one gateway, an aggregate's history and time travel,
// and a command form generated from the codec's field types. No framework, no build step.
// Data is never markup: every value reaches the page through textContent (el() below), never innerHTML.
"use strict";

(() => {
  const TOKEN_KEY = "foldline.token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let aggregates = [];       // from GET /aggregates
  let views = [];            // from GET /views: name and aggregate
  let cleanup = [];          // aborts the open streams of the current page

  // -- DOM helpers -------------------------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);
  const show = (value) => (value === null || value === undefined ? "" : typeof value === "string" ? value : JSON.stringify(value));
  const pretty = (value) => JSON.stringify(value, null, 2);
  const enc = encodeURIComponent;

  // -- API ---------------------------------------------------------------------------------------------
  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  async function api(path, options) {
    const opts = Object.assign({}, options || {});
    opts.headers = headers(opts.headers);
    let response;
    try {
      response = await fetch(path, opts);
    } catch (err) {
      return { status: 0, body: { error: { code: "network", message: String(err) } } };
    }
    let body = null;
    try { body = await response.json(); } catch (err) { body = { error: { code: "not_json", message: response.statusText } }; }
    $("connection").textContent = response.status === 401 ? "the gateway wants a bearer token" : "";
    return { status: response.status, body };
  }

  // Server-Sent Events over fetch (EventSource cannot send the Authorization header).
  function stream(path, onEvent) {
    const controller = new AbortController();
    (async () => {
      while (!controller.signal.aborted) {
        try {
          const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
          if (!response.ok || !response.body) { onEvent("error", { status: response.status }); }
          else {
            const reader = response.body.getReader();
            const decoder = new TextDecoder();
            let buffer = "";
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              buffer += decoder.decode(value, { stream: true });
              let cut;
              while ((cut = buffer.indexOf("\n\n")) >= 0) {
                const block = buffer.slice(0, cut);
                buffer = buffer.slice(cut + 2);
                let event = "message";
                const data = [];
                for (const line of block.split("\n")) {
                  if (line.startsWith("event:")) event = line.slice(6).trim();
                  else if (line.startsWith("data:")) data.push(line.slice(5).trim());
                }
                if (data.length) {
                  try { onEvent(event, JSON.parse(data.join("\n"))); } catch (err) { /* a malformed event: skip it */ }
                }
              }
            }
          }
        } catch (err) {
          if (controller.signal.aborted) return;
        }
        await new Promise((resolve) => setTimeout(resolve, 2000)); // reconnect, as EventSource would
      }
    })();
    cleanup.push(() => controller.abort());
  }

  function errorText(body) {
    const error = (body && body.error) || {};
    return (error.code ? error.code + ": " : "") + (error.message || "unexpected answer");
  }

  // -- navigation --------------------------------------------------------------------------------------
  async function loadNav() {
    const [aggs, viewsAnswer] = await Promise.all([api("/aggregates"), api("/views")]);
    aggregates = aggs.status === 200 ? aggs.body.aggregates : [];
    $("aggregates").replaceChildren(...aggregates.map((a) => el("li", {}, el("a", { href: "#/aggregate/" + enc(a.name), text: a.name }))));
    views = viewsAnswer.status === 200 ? viewsAnswer.body.views : [];
    $("views").replaceChildren(...views.map((v) => el("li", {}, el("a", { href: "#/view/" + enc(v.name), text: v.name }))));
    if (aggs.status !== 200) $("main").replaceChildren(el("p", { class: "error", text: errorText(aggs.body) }));
  }

  function route() {
    for (const stop of cleanup) stop();
    cleanup = [];
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "view" && parts[1]) return viewPage(parts[1]);
    if (parts[0] === "aggregate" && parts[1]) return aggregatePage(parts[1], parts.slice(2).join("/"));
    $("main").replaceChildren(
      el("h1", { text: "foldline console" }),
      el("p", { class: "muted", text: "Pick an aggregate to send commands and travel through an aggregate's history, or a view to watch its rows." }),
    );
  }

  // -- a view's rows: filters, paging, live -----------------------------------------------------------
  function viewPage(view) {
    const state = { filters: {}, limit: 25, offset: 0, columns: [] };
    const table = el("table", { id: "view-rows" });
    const status = el("span", { class: "muted", id: "view-status" });
    const info = el("span", { id: "page-info" });
    const prev = el("button", { type: "button", text: "‹ Previous", onclick: () => { state.offset = Math.max(0, state.offset - state.limit); restart(); } });
    const next = el("button", { type: "button", text: "Next ›", onclick: () => { state.offset += state.limit; restart(); } });
    const size = el("select", { onchange: () => { state.limit = Number(size.value); state.offset = 0; restart(); } },
      [10, 25, 100].map((n) => el("option", { value: String(n), text: n + " rows", selected: n === state.limit })));
    $("main").replaceChildren(el("h1", {}, "View ", el("code", { text: view })),
      el("section", {}, el("div", { class: "pager" }, prev, next, size, info, status), table));

    const thead = el("thead");
    const tbody = el("tbody");
    table.append(thead, tbody);
    let shownColumns = "";

    function render(rows) {
      if (rows.length) state.columns = Object.keys(rows[0]);
      if (state.columns.join() !== shownColumns) { // the header (and its filter inputs) only when columns change
        shownColumns = state.columns.join();
        thead.replaceChildren(
          el("tr", {}, state.columns.map((c) => el("th", { text: c }))),
          el("tr", {}, state.columns.map((c) => el("th", {},
            el("input", { value: state.filters[c] || "", placeholder: "filter", "data-column": c, onchange: (e) => {
              const value = e.target.value.trim();
              if (value) state.filters[c] = value; else delete state.filters[c];
              state.offset = 0;
              restart();
            } })))));
      }
      tbody.replaceChildren(...rows.map((row) => el("tr", {
        class: row.aggregate_id ? "clickable" : "",
        onclick: () => { if (row.aggregate_id) location.hash = "#/aggregate/" + enc(aggregateOf(view)) + "/" + enc(row.aggregate_id); },
      }, state.columns.map((c) => el("td", { text: show(row[c]) })))));
      if (!rows.length) tbody.replaceChildren(el("tr", {}, el("td", { class: "muted", text: "no rows" })));
      info.textContent = rows.length ? `rows ${state.offset + 1} to ${state.offset + rows.length}` : "no rows on this page";
      prev.disabled = state.offset === 0;
      next.disabled = rows.length < state.limit;
    }

    function restart() {
      for (const stop of cleanup) stop();
      cleanup = [];
      const params = new URLSearchParams(Object.assign({}, state.filters, { limit: state.limit, offset: state.offset }));
      status.textContent = "connecting…";
      stream(`/views/${enc(view)}/stream?${params}`, (event, data) => {
        if (event === "rows") { render(data.rows); status.textContent = "live · updated " + new Date().toLocaleTimeString(); status.className = "live"; }
        else if (event === "error") { status.textContent = "error " + (data.status || data.message || ""); status.className = "error"; }
      });
    }
    restart();
  }

  function aggregateOf(view) {
    const known = views.find((v) => v.name === view);
    return (known && known.aggregate) || (aggregates[0] || {}).name || "";
  }

  // -- an aggregate: command form, state, timeline, results, state-at-version ------------------------------
  function aggregatePage(name, id) {
    const agg = aggregates.find((a) => a.name === name);
    if (!agg) { $("main").replaceChildren(el("p", { class: "error", text: `no aggregate named ${name}` })); return; }
    const idInput = el("input", { id: "aggregate-id", value: id, placeholder: "aggregate id, e.g. inv-1", required: true });
    const open = el("form", { class: "pager", onsubmit: (e) => { e.preventDefault(); location.hash = "#/aggregate/" + enc(name) + "/" + enc(idInput.value.trim()); } },
      el("label", {}, "Id ", idInput), el("button", { type: "submit", text: "Open" }));
    const page = { last: 0 };
    const current = el("pre", { id: "current-state", text: id ? "…" : "" });
    const slider = el("input", { type: "range", id: "version-slider", min: "0", max: "0", value: "0", step: "1" });
    const sliderLabel = el("div", { id: "state-at-label", class: "muted" });
    const stateAt = el("pre", { id: "state-at" });
    const timeline = el("table", { id: "timeline" });
    const results = el("ul", { id: "results" });
    const form = commandForm(agg, () => idInput.value.trim(), page, (result) => { if (result && result.version) refresh(result.version); });
    $("main").replaceChildren(
      el("h1", {}, "Aggregate ", el("code", { text: name }), id ? " " : "", id ? el("code", { text: id }) : ""),
      open,
      el("div", { class: "row" },
        el("section", {}, el("h2", { text: "Send a command" }), form),
        el("section", {}, el("h2", { text: "Current state" }), current)),
      id ? el("div", { class: "row" },
        el("section", {}, el("h2", { text: "State at version" }), slider, sliderLabel, stateAt),
        el("section", {}, el("h2", { text: "Latest command results" }), results)) : "",
      id ? el("section", {}, el("h2", { text: "Event timeline" }), timeline) : "",
    );
    const letters = deadLetters(name, id);
    $("main").append(letters);
    if (!id) { current.textContent = "Open an aggregate by id, or create one with a command."; return; }

    let sliderRequest = 0;
    slider.addEventListener("input", async () => {
      const version = Number(slider.value);
      const mine = ++sliderRequest;
      sliderLabel.textContent = `version ${version} of ${page.last}…`;
      const r = await api(`/aggregates/${enc(name)}/state?aggregate_id=${enc(id)}&version=${version}`);
      if (mine !== sliderRequest) return; // a later move of the slider answers instead
      if (r.status === 200) { stateAt.textContent = pretty(r.body.state); sliderLabel.textContent = `version ${r.body.version} of ${r.body.last_version}` + (r.body.recorded_at ? ` · ${r.body.recorded_at}` : ""); }
      else { stateAt.textContent = ""; sliderLabel.textContent = errorText(r.body); }
    });

    async function refresh(minVersion) {
      const wait = minVersion ? `&min_version=${minVersion}` : "";
      const events = await api(`/aggregates/${enc(name)}/events?aggregate_id=${enc(id)}&limit=1000${wait}`);
      if (events.status === 404 && events.body.error && events.body.error.code === "unknown_aggregate_id") {
        current.textContent = "No events yet: send a command to create it.";
        page.last = 0;
        form.expected.value = "0";
        timeline.replaceChildren(el("tbody", {}, el("tr", {}, el("td", { class: "muted", text: "no events" }))));
        return;
      }
      if (events.status !== 200) { current.textContent = errorText(events.body); return; }
      page.last = events.body.version;
      form.expected.value = String(page.last);
      timeline.replaceChildren(
        el("thead", {}, el("tr", {}, ["version", "type", "recorded at", "command id", "payload"].map((h) => el("th", { text: h })))),
        el("tbody", {}, events.body.events.map((e) => e.gap
          ? el("tr", { class: "gap", "data-version": e.version },
            el("td", { text: e.version === e.to_version ? e.version : `${e.version}–${e.to_version}` }),
            el("td", { text: "missing" }), el("td"), el("td"),
            el("td", { class: "payload", text: (e.skipped || []).map((k) => `${k.reason}: ${k.error}`).join("\n") || "the journal lacks these versions" }))
          : el("tr", { "data-version": e.version, class: e.undecodable ? "undecodable" : "" },
            el("td", { text: e.version }),
            el("td", { text: e.type + (e.schema_version !== 1 ? ` (schema ${e.schema_version})` : "") + (e.undecodable ? " · undecodable here" : "") }),
            el("td", { text: e.recorded_at }),
            el("td", { text: e.command_id }),
            el("td", { class: "payload", text: JSON.stringify(e.payload) + (e.undecodable ? "\n" + e.undecodable : "") })))));
      const state = await api(`/aggregates/${enc(name)}/state?aggregate_id=${enc(id)}`);
      current.textContent = state.status === 200 ? `version ${state.body.version}\n` + pretty(state.body.state) : errorText(state.body);
      slider.max = String(page.last);
      slider.value = String(page.last);
      slider.dispatchEvent(new Event("input"));
    }

    stream(`/aggregates/${enc(name)}/stream?aggregate_id=${enc(id)}`, (event, data) => {
      if (event !== "result") return;
      results.prepend(el("li", {}, describe(data)));
      while (results.children.length > 20) results.lastChild.remove();
      if (data.status === "accepted" && data.version > page.last) refresh(data.version);
      if (data.status === "failed") letters.reload(); // a failed command left a dead letter
    });
    refresh(0);
  }

  // Dead letters of the aggregate (of one id when given) and the projectors' skipped records: all as text.
  function deadLetters(name, id) {
    const info = el("div", { id: "dead-letters-info", class: "muted" });
    const table = el("table", { id: "dead-letters" });
    const skips = el("table", { id: "projector-skips" });
    const reload = el("button", { type: "button", text: "Refresh", onclick: () => load() });
    const section = el("section", {}, el("h2", { text: "Dead letters" + (id ? " of this id" : "") }), el("div", { class: "pager" }, reload, info), table,
      el("h2", { text: "Records the projectors skipped" }), skips);

    function cause(d) {
      if (!d.decoded) return "not a dead letter: " + (d.problem || "");
      const c = d.cause || {};
      return [c.code, c.message].filter((x) => x !== null && x !== undefined).map(show).join(": ");
    }

    async function load() {
      info.textContent = "reading…";
      const params = new URLSearchParams({ limit: "50" });
      if (id) params.set("aggregate_id", id);
      const r = await api(`/aggregates/${enc(name)}/dead-letters?${params}`);
      if (r.status !== 200) { info.textContent = errorText(r.body); info.className = "error"; return; }
      const body = r.body;
      info.className = "muted";
      info.textContent = `${body.dead_letters.length} dead letter(s) on ${body.topic}, newest first` + (body.complete ? "" : " (the read stopped early: older ones may be missing)");
      table.replaceChildren(
        el("thead", {}, el("tr", {}, ["time", "partition@offset", "key", "command id", "cause", "value"].map((h) => el("th", { text: h })))),
        el("tbody", {}, body.dead_letters.length ? body.dead_letters.map((d) => el("tr", { "data-offset": d.offset },
          el("td", { text: d.timestamp || d.recorded_at || "" }),
          el("td", { text: `${d.partition}@${d.offset}` }),
          el("td", { text: show(d.record_key !== null && d.record_key !== undefined ? d.record_key : d.key) }),
          el("td", { text: d.command_id || "" }),
          el("td", { class: d.decoded ? "" : "error", text: cause(d) }),
          el("td", { class: "payload", text: show(d.decoded ? d.value : d.raw) + (d.extra ? "\n" + JSON.stringify(d.extra) : "") }),
        )) : [el("tr", {}, el("td", { class: "muted", colspan: 6, text: "no dead letters" }))]));
      const skipped = body.projector_skips || [];
      skips.replaceChildren(
        el("thead", {}, el("tr", {}, ["time", "view", "source", "aggregate", "reason", "error"].map((h) => el("th", { text: h })))),
        el("tbody", {}, skipped.length ? skipped.map((k) => el("tr", {},
          el("td", { text: k.recorded_at }),
          el("td", { text: `${k.view} (revision ${k.revision})` }),
          el("td", { text: `${k.topic} ${k.partition}@${k.offset}` }),
          el("td", { text: (k.aggregate_id || "?") + (k.version ? ` v${k.version}` : "") }),
          el("td", { text: k.reason }),
          el("td", { class: "payload", text: k.error }),
        )) : [el("tr", {}, el("td", { class: "muted", colspan: 6, text: body.projector_skips === null ? "no projection database" : "none" }))]));
    }
    load();
    section.reload = load;
    return section;
  }

  function describe(result) {
    const what = result.status === "accepted"
      ? `accepted · version ${result.version}` + (result.events && result.events.length ? ` (${result.events.join(", ")})` : "")
      : `${result.status} · ${result.reason || result.code || ""} · version ${result.version}`;
    return el("span", {}, el("strong", { text: what }), el("span", { class: "muted", text: ` · command ${result.command_id}` }));
  }

  // A form from the command's JSON schema (the codec's field names and types).
  function commandForm(agg, currentId, page, after) {
    const types = Object.keys(agg.payloads || {});
    const select = el("select", { id: "command-type" }, types.map((t) => el("option", { value: t, text: t })));
    const fields = el("div", { id: "command-fields" });
    const expected = el("input", { id: "expected-version", type: "number", min: "0", step: "1", value: String(page.last) });
    const result = el("div", { id: "command-result", "aria-live": "polite" });
    const submit = el("button", { type: "submit", id: "submit-command", text: "Send" });
    const inputs = {};

    function build() {
      fields.replaceChildren();
      for (const key of Object.keys(inputs)) delete inputs[key];
      const schema = agg.payloads[select.value] || { properties: {} };
      const required = new Set(schema.required || []);
      for (const [field, prop] of Object.entries(schema.properties || {})) {
        const input = fieldInput(field, prop, required.has(field));
        inputs[field] = { input, prop, required: required.has(field) };
        fields.append(el("label", {}, el("span", { class: "name", text: field + (required.has(field) ? " *" : "") }), input));
      }
      if (!Object.keys(inputs).length) fields.append(el("p", { class: "muted", text: "no fields" }));
    }
    select.addEventListener("change", build);
    build();

    const form = el("form", { id: "command-form", onsubmit: async (e) => {
      e.preventDefault();
      const id = currentId();
      if (!id) { result.className = "result error"; result.textContent = "Give the aggregate an id first."; return; }
      let payload;
      try { payload = collect(inputs); } catch (err) { result.className = "result error"; result.textContent = String(err.message || err); return; }
      const body = { aggregate_id: id, type: select.value, payload };
      if (expected.value !== "") body.expected_version = Number(expected.value);
      submit.disabled = true;
      result.className = "result";
      result.textContent = "sending…";
      const r = await api(`/aggregates/${enc(agg.name)}/commands`, {
        method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
      });
      submit.disabled = false;
      if (r.body && r.body.status) {
        result.className = "result " + r.body.status;
        result.replaceChildren(describe(r.body));
        if (r.body.status === "accepted") after(r.body);
      } else {
        result.className = "result error";
        result.textContent = `${r.status} ${errorText(r.body)}`;
      }
    } }, el("label", {}, el("span", { class: "name", text: "command" }), select), fields,
    el("label", {}, el("span", { class: "name", text: "expected version" }), expected), submit, result);
    form.expected = expected;
    return form;
  }

  function fieldInput(field, prop, required) {
    const common = { name: field, "data-field": field, required };
    if (prop.enum) return el("select", common, prop.enum.map((v) => el("option", { value: JSON.stringify(v), text: show(v) })));
    if (prop.type === "integer") return el("input", Object.assign({ type: "number", step: "1" }, common));
    if (prop.type === "number") return el("input", Object.assign({ type: "number", step: "any" }, common));
    if (prop.type === "boolean") return el("input", Object.assign({ type: "checkbox" }, common, { required: false }));
    if (prop.type === "string" && prop.format === "date") return el("input", Object.assign({ type: "date" }, common));
    if (prop.type === "string" && prop.format === "date-time") return el("input", Object.assign({ type: "text", placeholder: "2026-12-01T10:00:00Z" }, common));
    if (prop.type === "string") return el("input", Object.assign({ type: "text", placeholder: prop.pattern ? "12.50" : "" }, common));
    return el("textarea", Object.assign({ rows: 2, placeholder: "JSON" }, common));
  }

  function collect(inputs) {
    const payload = {};
    for (const [field, { input, prop, required }] of Object.entries(inputs)) {
      if (prop.type === "boolean") { payload[field] = input.checked; continue; }
      const raw = input.value;
      if (raw === "" && !required) continue;
      if (prop.enum) payload[field] = JSON.parse(raw);
      else if (prop.type === "integer") payload[field] = Number.parseInt(raw, 10);
      else if (prop.type === "number") payload[field] = Number(raw);
      else if (prop.type === "string") payload[field] = raw;
      else {
        try { payload[field] = JSON.parse(raw); } catch (err) { throw new Error(`${field} must be JSON`); }
      }
    }
    return payload;
  }

  // -- start -------------------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", async () => {
    $("token").value = token;
    $("token-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      token = $("token").value.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      await loadNav();
      route();
    });
    window.addEventListener("hashchange", route);
    await loadNav();
    route();
  });
})();
