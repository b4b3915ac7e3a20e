// Layer's dashboard: the namespace inventory, live through /v2/stability/events, and a
// detail view per namespace. Vanilla JS, no dependency; it reads only Layer's public API,
// with the key the user typed in (kept in this tab's sessionStorage, sent as a bearer token).
"use strict";

(function () {
  const KEY_STORAGE = "layer.api_key";
  const PAGE_SIZE = 100;
  const POLL_INTERVAL_MS = 5000;
  const ROW_REFRESH_DELAY_MS = 700;

  // --- pure helpers (exported as window.LayerDashboard for tests) -------------------------

  /** stable | updating | unknown, from a listing row (Layer's fields may be null). */
  function rowStatus(row) {
    if (row.status) return row.status;
    if (row.is_stable === null || row.is_stable === undefined) return "unknown";
    if (row.is_stable) return "stable";
    const index = row.index && row.index.status;
    if (index === "updating" || row.stable_as_of_ms !== null || row.last_write_ms !== null) {
      return "updating";
    }
    return "unknown";
  }

  /** The row after a stability change event (docs/events.md). */
  function applyChange(row, change) {
    return Object.assign({}, row, {
      is_stable: change.is_stable,
      stable_as_of_ms: change.stable_as_of,
      status: change.is_stable ? "stable" : "updating",
      index: change.index || row.index || null,
    });
  }

  /** A listing row merged with a fresh `/metadata` answer of the same namespace. */
  function applyMetadata(row, body) {
    const next = Object.assign({}, row, {
      row_count: typeof body.approx_row_count === "number" ? body.approx_row_count : row.row_count,
      size_bytes: typeof body.approx_logical_bytes === "number" ? body.approx_logical_bytes : row.size_bytes,
      index: body.index || row.index || null,
    });
    const layer = body.layer;
    if (layer) {
      next.is_stable = layer.is_stable;
      next.stable_as_of_ms = layer.stable_as_of;
      next.last_write_ms = layer.last_write_ms;
      next.status = layer.status;
      next.cache_state = Object.assign({}, row.cache_state || { warm_inflight: false }, { state: layer.cache_state });
    }
    return next;
  }

  function formatAge(ms, now) {
    if (ms === null || ms === undefined) return "—";
    const s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h ago";
    return Math.floor(s / 86400) + " d ago";
  }

  function formatDuration(ms) {
    if (ms === null || ms === undefined || !isFinite(ms)) return "—";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s";
    if (ms < 3600000) return (ms / 60000).toFixed(1) + " min";
    return (ms / 3600000).toFixed(1) + " h";
  }

  function formatCount(n) {
    if (n === null || n === undefined) return "—";
    return n.toLocaleString("en-US");
  }

  function formatBytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? value : value.toFixed(1)) + " " + units[unit];
  }

  function unindexed(row) {
    const index = row.index;
    if (!index) return null;
    if (index.status === "up-to-date") return { rows: 0, bytes: 0 };
    const rows = typeof index.unindexed_rows === "number" ? index.unindexed_rows : null;
    const bytes = typeof index.unindexed_bytes === "number" ? index.unindexed_bytes : null;
    return rows === null && bytes === null ? null : { rows: rows, bytes: bytes };
  }

  const STATUS_ORDER = { updating: 0, unknown: 1, stable: 2 };

  /** The value a column sorts by (null sorts last). */
  function sortValue(row, key) {
    switch (key) {
      case "name": return row.name;
      case "rows": return row.row_count;
      case "size": return row.size_bytes;
      case "written": return row.last_write_ms;
      case "stable": return STATUS_ORDER[rowStatus(row)] * 1e15 + (row.stable_as_of_ms || 0);
      case "unindexed": { const u = unindexed(row); return u ? (u.bytes || 0) + (u.rows || 0) : null; }
      case "cache": return row.cache_state ? row.cache_state.state : null;
      default: return null;
    }
  }

  function compareRows(key, direction) {
    const sign = direction === "descending" ? -1 : 1;
    return function (a, b) {
      const x = sortValue(a, key);
      const y = sortValue(b, key);
      if (x === y) return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sign;
    };
  }

  function summarize(rows) {
    const counts = { namespaces: 0, stable: 0, updating: 0, unknown: 0, errors: 0 };
    for (const row of rows) {
      counts.namespaces += 1;
      counts[rowStatus(row)] += 1;
      if (row.metadata_error) counts.errors += 1;
    }
    return counts;
  }

  /** Split a server-sent events text into complete events and the unfinished rest. */
  function parseEvents(text) {
    const events = [];
    const normalized = text.replace(/\r\n?/g, "\n");
    const blocks = normalized.split("\n\n");
    const rest = blocks.pop();
    for (const block of blocks) {
      const event = { event: "message", data: [], id: null, retry: null };
      let seen = false;
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        seen = true;
        if (field === "data") event.data.push(value);
        else if (field === "event") event.event = value;
        else if (field === "id") event.id = value;
        else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
      }
      if (seen) {
        event.data = event.data.join("\n");
        events.push(event);
      }
    }
    return { events: events, rest: rest };
  }

  /** Points for the detail chart, oldest first: stable lag (stable_as_of − updated_at). */
  function chartSeries(snapshots) {
    return snapshots
      .slice()
      .sort(function (a, b) { return a.stable_as_of - b.stable_as_of; })
      .map(function (s) {
        const updated = s.updated_at ? Date.parse(s.updated_at) : NaN;
        return {
          t: s.stable_as_of,
          lag: isFinite(updated) ? Math.max(0, s.stable_as_of - updated) : null,
          rows: s.approx_row_count,
        };
      });
  }

  // --- state -----------------------------------------------------------------------------

  const state = {
    key: null,
    prefix: "",
    rows: new Map(),
    cursor: null,
    sort: { key: "name", direction: "ascending" },
    generation: 0,
    stream: null,
    pollTimer: null,
    refreshTimers: new Map(),
    lastEventAt: new Map(),
    detail: null,
  };

  const $ = function (selector) { return document.querySelector(selector); };

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- the API ---------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options) {
    const init = Object.assign({}, options || {});
    init.headers = Object.assign({ Authorization: "Bearer " + state.key }, init.headers || {});
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiFailure(0, "Layer did not answer (" + error.message + ")");
    }
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        const body = await response.json();
        if (body && body.error) message = body.error;
      } catch (ignored) { /* not JSON: keep the status line */ }
      throw new ApiFailure(response.status, message);
    }
    return response;
  }

  async function apiJson(path) {
    return (await api(path)).json();
  }

  function showError(message) {
    const box = $("#error");
    box.textContent = message;
    box.hidden = !message;
  }

  // --- key -------------------------------------------------------------------------------

  function showKeyForm(message) {
    stopLive();
    $("#key-form").hidden = false;
    $("#inventory").hidden = true;
    $("#detail").hidden = true;
    $("#forget-key").hidden = true;
    showError(message || "");
    $("#api_key").focus();
  }

  function onKeySubmit(event) {
    event.preventDefault();
    const key = $("#api_key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    state.key = key;
    $("#api_key").value = "";
    $("#key-form").hidden = true;
    $("#forget-key").hidden = false;
    showError("");
    route();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    state.rows.clear();
    showKeyForm("");
  }

  function handleFailure(error) {
    if (error.name === "AbortError") return;
    if (error.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      state.key = null;
      showKeyForm("Layer refused the key: " + error.message);
      return;
    }
    showError(error.message);
  }

  // --- inventory -------------------------------------------------------------------------

  async function loadInventory(append) {
    const generation = append ? state.generation : ++state.generation;
    const params = new URLSearchParams({ page_size: String(PAGE_SIZE) });
    if (state.prefix) params.set("prefix", state.prefix);
    if (append && state.cursor) params.set("cursor", state.cursor);
    const page = await apiJson("/v2/namespaces?" + params.toString());
    if (generation !== state.generation) return;  // a newer search won
    if (!append) state.rows.clear();
    for (const row of page.namespaces) state.rows.set(row.name, row);
    state.cursor = page.next_cursor || null;
    showError("");
    renderInventory();
  }

  function sortedRows() {
    return Array.from(state.rows.values()).sort(compareRows(state.sort.key, state.sort.direction));
  }

  function renderRow(row, now) {
    const status = rowStatus(row);
    const nameCell = el("td", { class: "name" }, [
      el("a", { href: "#/namespaces/" + encodeURIComponent(row.name), text: row.name }),
    ]);
    if (row.metadata_error) {
      nameCell.append(el("span", { class: "row-error", "data-metadata-error": "", text: row.metadata_error }));
    }
    const foreign = row.is_stable === null || row.is_stable === undefined;
    const stableCell = el("td", { class: "stable" }, [
      el("span", { class: "badge " + status, text: status }),
    ]);
    if (foreign) {
      stableCell.title = "Layer has no freshness for this namespace with this key";
    } else if (row.stable_as_of_ms !== null && row.stable_as_of_ms !== undefined) {
      stableCell.append(el("span", { class: "age", "data-age": String(row.stable_as_of_ms), text: formatAge(row.stable_as_of_ms, now) }));
    }
    const u = unindexed(row);
    const unindexedText = u === null ? "—" : [
      u.rows === null ? null : formatCount(u.rows) + (u.rows === 1 ? " row" : " rows"),
      u.bytes === null ? null : formatBytes(u.bytes),
    ].filter(Boolean).join(" · ");
    const cache = row.cache_state ? row.cache_state.state + (row.cache_state.warm_inflight ? " (warming)" : "") : "—";
    return el("tr", { "data-namespace": row.name, "data-status": status }, [
      nameCell,
      el("td", { class: "num", text: formatCount(row.row_count) }),
      el("td", { class: "num", text: formatBytes(row.size_bytes) }),
      el("td", {}, [el("span", { "data-age": row.last_write_ms === null ? null : String(row.last_write_ms), text: formatAge(row.last_write_ms, now) })]),
      stableCell,
      el("td", { class: "num", text: unindexedText }),
      el("td", { text: cache }),
    ]);
  }

  function renderInventory() {
    const now = Date.now();
    const body = $("#namespaces tbody");
    body.replaceChildren.apply(body, sortedRows().map(function (row) { return renderRow(row, now); }));
    const counts = summarize(state.rows.values());
    for (const node of document.querySelectorAll("[data-counter]")) {
      node.textContent = String(counts[node.dataset.counter]);
    }
    for (const th of document.querySelectorAll("#namespaces th[data-sort]")) {
      if (th.dataset.sort === state.sort.key) th.setAttribute("aria-sort", state.sort.direction);
      else th.removeAttribute("aria-sort");
    }
    $("#empty").hidden = state.rows.size > 0;
    $("#more").hidden = !state.cursor;
  }

  function updateRow(name, next) {
    state.rows.set(name, next);
    const old = document.querySelector('#namespaces tr[data-namespace="' + CSS.escape(name) + '"]');
    if (!old) return renderInventory();
    const row = renderRow(next, Date.now());
    if (old.dataset.status !== row.dataset.status) row.classList.add("flash");
    old.replaceWith(row);
    const counts = summarize(state.rows.values());
    for (const node of document.querySelectorAll("[data-counter]")) {
      node.textContent = String(counts[node.dataset.counter]);
    }
  }

  function tickAges() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-age]")) {
      node.textContent = formatAge(Number(node.dataset.age), now);
    }
  }

  function onSort(event) {
    const th = event.target.closest("th[data-sort]");
    if (!th) return;
    const key = th.dataset.sort;
    state.sort = {
      key: key,
      direction: state.sort.key === key && state.sort.direction === "ascending" ? "descending" : "ascending",
    };
    renderInventory();
  }

  let searchTimer = null;
  function onPrefixInput() {
    const input = $("#prefix");
    if (!input.checkValidity()) return;
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () {
      state.prefix = input.value.trim();
      const url = new URL(window.location.href);
      if (state.prefix) url.searchParams.set("prefix", state.prefix);
      else url.searchParams.delete("prefix");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
      refreshInventory();
    }, 250);
  }

  function refreshInventory() {
    loadInventory(false).then(startLive, handleFailure);
  }

  // --- live ------------------------------------------------------------------------------

  function setLive(stateName, note) {
    const badge = $("#live");
    badge.dataset.state = stateName;
    badge.textContent = stateName;
    $("#live-note").textContent = note || "";
  }

  function stopLive() {
    if (state.stream) state.stream.abort();
    state.stream = null;
    clearInterval(state.pollTimer);
    state.pollTimer = null;
    setLive("off");
  }

  function startLive() {
    stopLive();
    const controller = new AbortController();
    state.stream = controller;
    readStream(controller, state.prefix, null, 0);
  }

  function startPolling(note) {
    setLive("polling", note);
    clearInterval(state.pollTimer);
    state.pollTimer = setInterval(function () {
      loadInventory(false).catch(handleFailure);
      if (state.detail) loadDetail(state.detail).catch(handleFailure);
    }, POLL_INTERVAL_MS);
  }

  async function readStream(controller, prefix, lastEventId, failures) {
    let retryMs = 1000;
    setLive("connecting");
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await api(
        "/v2/stability/events" + (prefix ? "?prefix=" + encodeURIComponent(prefix) : ""),
        { headers: headers, signal: controller.signal, cache: "no-store" },
      );
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        const parsed = parseEvents(buffer);
        buffer = parsed.rest;
        for (const event of parsed.events) {
          if (event.id !== null) lastEventId = event.id;
          if (event.retry !== null) retryMs = event.retry;
          if (event.event === "ready") {
            failures = 0;
            const ready = JSON.parse(event.data);
            setLive("live", ready.resume === "partial" ? "some changes were missed while disconnected" : "");
            if (ready.resume === "partial" || ready.resume === "reset") refreshInventory();
          } else if (event.event === "error") {
            setLive("connecting", JSON.parse(event.data).error);
          } else if (event.event === "message") {
            onChange(JSON.parse(event.data));
          }
        }
      }
    } catch (error) {
      if (error.name === "AbortError" || controller.signal.aborted) return;
      if (error.status === 401) return handleFailure(error);
      if (error.status === 403) {
        return startPolling("live updates need the key Layer watches with; refreshing every 5 s");
      }
      failures += 1;
    }
    if (controller.signal.aborted) return;
    setLive("connecting");
    const delay = Math.min(30000, retryMs * Math.pow(2, Math.min(failures, 5)));
    setTimeout(function () {
      if (!controller.signal.aborted) readStream(controller, prefix, lastEventId, failures);
    }, delay);
  }

  function onChange(change) {
    state.lastEventAt.set(change.namespace, Date.now());
    const row = state.rows.get(change.namespace);
    if (row) {
      updateRow(change.namespace, applyChange(row, change));
      scheduleRowRefresh(change.namespace);
    } else if (change.namespace.startsWith(state.prefix)) {
      addRow(change.namespace, change);  // a namespace Layer just saw for the first time
    }
    if (state.detail === change.namespace) scheduleDetailRefresh();
  }

  /** A row for a namespace the listing did not have, from its `/metadata`. */
  function addRow(name, change) {
    const row = applyChange({
      name: name, row_count: null, size_bytes: null, stable_as_of_ms: null, is_stable: null,
      cache_state: null, last_write_ms: null, index: null, shadow: false, labels: {},
      metadata_error: null,
    }, change);
    state.rows.set(name, row);
    renderInventory();
    scheduleRowRefresh(name);
  }

  /** Counts and `index` move with a change too: ask for them, once per burst. */
  function scheduleRowRefresh(name) {
    clearTimeout(state.refreshTimers.get(name));
    state.refreshTimers.set(name, setTimeout(function () {
      state.refreshTimers.delete(name);
      const asked = Date.now();
      apiJson("/v2/namespaces/" + encodeURIComponent(name) + "/metadata").then(function (body) {
        const row = state.rows.get(name);
        if (!row || (state.lastEventAt.get(name) || 0) > asked) return;  // a newer event won
        updateRow(name, applyMetadata(row, body));
      }, function () { /* the row keeps what the event said */ });
    }, ROW_REFRESH_DELAY_MS));
  }

  // --- detail ----------------------------------------------------------------------------

  let detailTimer = null;
  function scheduleDetailRefresh() {
    clearTimeout(detailTimer);
    detailTimer = setTimeout(function () {
      if (state.detail) loadDetail(state.detail).catch(handleFailure);
    }, ROW_REFRESH_DELAY_MS);
  }

  async function loadDetail(name) {
    const path = "/v2/namespaces/" + encodeURIComponent(name);
    const results = await Promise.all([
      apiJson(path + "/metadata"),
      apiJson(path + "/snapshots?limit=100").catch(function (error) {
        if (error.status === 403 || error.status === 404) return { snapshots: [], refused: error.message };
        throw error;
      }),
    ]);
    if (state.detail !== name) return;
    renderDetail(name, results[0], results[1]);
  }

  function renderDetail(name, metadata, history) {
    const now = Date.now();
    $("#detail-name").textContent = name;
    const layer = metadata.layer;
    const list = $("#layer-block");
    list.replaceChildren();
    if (!layer) {
      list.append(el("dt", { text: "layer" }), el("dd", { class: "muted", text: "null: this key's namespace of this name is not the one Layer watches" }));
    } else {
      const fields = [
        ["status", el("span", { class: "badge " + layer.status, "data-layer-status": layer.status, text: layer.status })],
        ["is_stable", String(layer.is_stable)],
        ["stable_as_of", layer.stable_as_of === null ? "null" : new Date(layer.stable_as_of).toISOString() + " (" + formatAge(layer.stable_as_of, now) + ")"],
        ["last_write_ms", layer.last_write_ms === null ? "null" : new Date(layer.last_write_ms).toISOString() + " (" + formatAge(layer.last_write_ms, now) + ")"],
        ["last_poll_ms", layer.last_poll_ms === null ? "null" : formatAge(layer.last_poll_ms, now)],
        ["cache_state", layer.cache_state],
      ];
      for (const [label, value] of fields) {
        list.append(el("dt", { text: label }), el("dd", {}, [value]));
      }
    }
    $("#upstream").textContent = JSON.stringify(Object.assign({}, metadata, { layer: undefined }), null, 2);

    const snapshots = history.snapshots || [];
    const body = $("#snapshots tbody");
    body.replaceChildren.apply(body, snapshots.map(function (s) {
      const updated = s.updated_at ? Date.parse(s.updated_at) : NaN;
      return el("tr", { "data-snapshot": String(s.stable_as_of) }, [
        el("td", { text: new Date(s.stable_as_of).toISOString() }),
        el("td", { class: "num", text: formatCount(s.approx_row_count) }),
        el("td", { class: "num", text: formatBytes(s.approx_logical_bytes) }),
        el("td", { text: s.updated_at || "—" }),
        el("td", { class: "num", text: isFinite(updated) ? formatDuration(Math.max(0, s.stable_as_of - updated)) : "—" }),
      ]);
    }));
    $("#no-snapshots").hidden = snapshots.length > 0;
    if (history.refused) $("#no-snapshots").textContent = history.refused;
    renderChart(chartSeries(snapshots));
  }

  function renderChart(points) {
    const width = 640;
    const height = 250;
    const pad = { left: 56, right: 56, top: 26, bottom: 30 };
    const root = svg("svg", { viewBox: "0 0 " + width + " " + height, role: "img", id: "freshness-chart",
      "aria-label": "stable lag and row count across snapshots", "data-points": points.length });
    root.append(svg("text", { x: pad.left, y: 14, class: "title" }, "stable lag (red, left) and rows (blue, right) per snapshot"));
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    root.append(svg("line", { x1: pad.left, y1: pad.top + plotH, x2: pad.left + plotW, y2: pad.top + plotH, class: "axis" }));
    root.append(svg("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: pad.top + plotH, class: "axis" }));
    root.append(svg("line", { x1: pad.left + plotW, y1: pad.top, x2: pad.left + plotW, y2: pad.top + plotH, class: "axis" }));
    if (points.length === 0) {
      root.append(svg("text", { x: pad.left + 10, y: pad.top + plotH / 2 }, "no snapshots yet"));
      $("#chart").replaceChildren(root);
      return;
    }
    const t0 = points[0].t;
    const t1 = points[points.length - 1].t;
    const x = function (t) { return pad.left + (t1 === t0 ? plotW / 2 : ((t - t0) / (t1 - t0)) * plotW); };
    const lags = points.map(function (p) { return p.lag; }).filter(function (v) { return v !== null; });
    const rows = points.map(function (p) { return p.rows; }).filter(function (v) { return v !== null; });
    const maxLag = Math.max(1, ...lags);
    const maxRows = Math.max(1, ...rows);
    const yLag = function (v) { return pad.top + plotH - (v / maxLag) * plotH; };
    const yRows = function (v) { return pad.top + plotH - (v / maxRows) * plotH; };
    for (const f of [0.25, 0.5, 0.75, 1]) {
      const y = pad.top + plotH - f * plotH;
      root.append(svg("line", { x1: pad.left, y1: y, x2: pad.left + plotW, y2: y, class: "grid" }));
      root.append(svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end" }, formatDuration(f * maxLag)));
      root.append(svg("text", { x: pad.left + plotW + 6, y: y + 4 }, formatCount(Math.round(f * maxRows))));
    }
    const line = function (key, yOf, cls) {
      const pts = points.filter(function (p) { return p[key] !== null; });
      if (pts.length === 0) return;
      root.append(svg("polyline", { class: cls, "data-series": cls,
        points: pts.map(function (p) { return x(p.t).toFixed(1) + "," + yOf(p[key]).toFixed(1); }).join(" ") }));
      for (const p of pts) root.append(svg("circle", { cx: x(p.t).toFixed(1), cy: yOf(p[key]).toFixed(1), r: 3, class: "dot-" + cls }));
    };
    line("lag", yLag, "lag");
    line("rows", yRows, "rows");
    root.append(svg("text", { x: pad.left, y: height - 8 }, new Date(t0).toLocaleTimeString("en-GB")));
    root.append(svg("text", { x: pad.left + plotW, y: height - 8, "text-anchor": "end" }, new Date(t1).toLocaleTimeString("en-GB")));
    $("#chart").replaceChildren(root);
  }

  // --- routing ---------------------------------------------------------------------------

  function route() {
    if (!state.key) return showKeyForm("");
    $("#forget-key").hidden = false;
    const match = window.location.hash.match(/^#\/namespaces\/(.+)$/);
    if (match) {
      state.detail = decodeURIComponent(match[1]);
      $("#inventory").hidden = true;
      $("#detail").hidden = false;
      $("#detail-name").textContent = state.detail;
      loadDetail(state.detail).catch(handleFailure);
      if (!state.stream && !state.pollTimer) startLive();
    } else {
      state.detail = null;
      $("#detail").hidden = true;
      $("#inventory").hidden = false;
      refreshInventory();
    }
  }

  function init() {
    state.key = sessionStorage.getItem(KEY_STORAGE);
    state.prefix = new URLSearchParams(window.location.search).get("prefix") || "";
    $("#prefix").value = state.prefix;
    $("#key-form").addEventListener("submit", onKeySubmit);
    $("#forget-key").addEventListener("click", forgetKey);
    $("#search").addEventListener("submit", function (event) { event.preventDefault(); });
    $("#prefix").addEventListener("input", onPrefixInput);
    $("#namespaces thead").addEventListener("click", onSort);
    $("#more").addEventListener("click", function () { loadInventory(true).catch(handleFailure); });
    window.addEventListener("hashchange", route);
    setInterval(tickAges, 1000);
    route();
  }

  window.LayerDashboard = {
    applyChange: applyChange,
    applyMetadata: applyMetadata,
    chartSeries: chartSeries,
    compareRows: compareRows,
    formatAge: formatAge,
    formatBytes: formatBytes,
    parseEvents: parseEvents,
    rowStatus: rowStatus,
    summarize: summarize,
    unindexed: unindexed,
  };
  document.addEventListener("DOMContentLoaded", init);
})();
