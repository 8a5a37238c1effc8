// finstream dashboard: sign-in (JWT in sessionStorage), market chart, live channels, models, risk, pipeline.
// Plain browser JS, no build step. Every URL is relative to the page (works below a root path).
"use strict";

(function () {
  const CHANNELS = ["enhanced", "ai-predictions", "risk-alerts", "stream-metrics", "pipeline-status"];
  const MAX_ALERTS = 200;
  const $ = (id) => document.getElementById(id);
  const state = { session: null, symbol: null, chart: null, series: null, intraday: false, lastTime: 0,
    sockets: {}, lastSeq: {}, retry: {}, metrics: {}, predictions: {}, symbols: new Set() };

  // ---- session -------------------------------------------------------------------------------------
  function loadSession() {
    try {
      const s = JSON.parse(sessionStorage.getItem("finstream.session") || "null");
      return s && s.expires_at * 1000 > Date.now() ? s : null;
    } catch (e) { return null; }
  }

  async function signIn(event) {
    event.preventDefault();
    $("signin-error").textContent = "";
    const body = JSON.stringify({ username: $("username").value, password: $("password").value });
    const r = await fetch("auth/token", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { $("signin-error").textContent = data.detail || `sign-in failed (${r.status})`; return; }
    $("password").value = "";
    state.session = data;
    sessionStorage.setItem("finstream.session", JSON.stringify(data));
    start();
  }

  function signOut(message) {
    sessionStorage.removeItem("finstream.session");
    state.session = null;
    for (const ws of Object.values(state.sockets)) { ws.onclose = null; ws.close(1000); }
    state.sockets = {};
    for (const t of Object.values(state.retry)) clearTimeout(t);
    if (state.chart) { state.chart.remove(); state.chart = null; state.series = null; }
    $("app-view").hidden = true; $("signout").hidden = true; $("reload").hidden = true;
    $("signin-view").hidden = false; $("who").textContent = "";
    $("signin-error").textContent = typeof message === "string" ? message : "";
  }

  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${state.session.access_token}` };
    const r = await fetch(path, { ...options, headers });
    const data = await r.json().catch(() => ({}));
    if (r.status === 401) { signOut("Session expired: sign in again."); throw new Error("401"); }
    if (!r.ok) throw new Error(data.detail || `${r.status}`);
    return data;
  }

  function start() {
    const s = state.session;
    $("signin-view").hidden = true; $("app-view").hidden = false; $("signout").hidden = false;
    $("who").textContent = `${s.username} (${s.role})`;
    $("who").dataset.role = s.role;
    $("reload").hidden = s.role !== "admin";
    for (const c of CHANNELS) connect(c);
    loadModels();
    const last = localStorage.getItem("finstream.symbol");
    if (last) { $("symbol").value = last; pick(last); }
  }

  // ---- market chart --------------------------------------------------------------------------------
  const secs = (iso) => Math.floor(Date.parse(iso) / 1000);
  const fmt = (x, d = 4) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
  const pct = (x, d = 2) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(d)} %`);

  async function pick(symbol) {
    state.symbol = symbol;
    localStorage.setItem("finstream.symbol", symbol);
    $("chart-info").textContent = "loading…";
    $("risk-symbol").textContent = symbol;
    showPrediction();
    loadRisk(symbol);
    let data;
    try { data = await api(`history/${encodeURIComponent(symbol)}?limit=1000`); } catch (e) {
      $("chart-info").textContent = `history: ${e.message}`; return;
    }
    drawChart(data);
  }

  function drawChart(data) {
    const bars = data.bars.filter((b) => b.close !== null);
    const times = bars.map((b) => secs(b.ts));
    const gaps = times.slice(1).map((t, i) => t - times[i]).sort((a, b) => a - b);
    state.intraday = gaps.length > 0 && gaps[Math.floor(gaps.length / 2)] < 86400 / 2;
    if (state.chart) state.chart.remove();
    const el = $("chart");
    const chart = LightweightCharts.createChart(el, {
      autoSize: true,
      layout: { background: { color: "#0c1117" }, textColor: "#c8d0d8" },
      grid: { vertLines: { color: "#1c2630" }, horzLines: { color: "#1c2630" } },
      timeScale: { timeVisible: state.intraday, secondsVisible: false },
    });
    let series;
    let points;
    if (state.intraday) {
      series = chart.addSeries(LightweightCharts.CandlestickSeries, {
        upColor: "#26a69a", downColor: "#ef5350", wickUpColor: "#26a69a", wickDownColor: "#ef5350", borderVisible: false });
      points = bars.map((b, i) => ({ time: times[i], open: b.open, high: b.high, low: b.low, close: b.close }));
    } else {
      series = chart.addSeries(LightweightCharts.LineSeries, { color: "#4a90d9", lineWidth: 2 });
      points = bars.map((b, i) => ({ time: times[i], value: b.close }));
    }
    series.setData(points);
    chart.timeScale().fitContent();
    state.chart = chart; state.series = series; state.lastTime = times.length ? times[times.length - 1] : 0;
    el.dataset.points = String(points.length);
    el.dataset.kind = state.intraday ? "candles" : "line";
    $("chart-info").textContent = `${data.symbol}: ${points.length} ${state.intraday ? "intraday candles" : "daily closes"}` +
      (data.truncated ? ` (latest of ${data.total})` : "");
  }

  function liveBar(d) {
    remember(d.symbol);
    if (d.symbol !== state.symbol) return;
    $("last-bar").textContent = `${d.symbol} ${d.interval} ${d.bar_ts}: close ${fmt(d.bar.close, 2)}` +
      (d.risk && d.risk.drawdown !== undefined ? `, drawdown ${pct(d.risk.drawdown)}` : "");
    $("last-bar").dataset.ts = d.bar_ts;
    const t = secs(d.bar_ts);
    if (!state.series || t < state.lastTime) return; // replayed bars older than the chart's last one
    const b = d.bar;
    state.series.update(state.intraday ? { time: t, open: b.open, high: b.high, low: b.low, close: b.close }
      : { time: t, value: b.close });
    if (t > state.lastTime) $("chart").dataset.points = String(Number($("chart").dataset.points) + 1);
    state.lastTime = t;
  }

  function remember(symbol) {
    if (state.symbols.has(symbol)) return;
    state.symbols.add(symbol);
    const o = document.createElement("option"); o.value = symbol; $("symbols").appendChild(o);
  }

  // ---- predictions ---------------------------------------------------------------------------------
  function prediction(d) {
    remember(d.symbol);
    state.predictions[d.symbol] = d;
    const rows = Object.values(state.predictions).map((p) => {
      const tr = document.createElement("tr");
      tr.dataset.symbol = p.symbol;
      const cells = [p.symbol, p.bar_ts, pct(p.predicted_return, 3), fmt(p.probability_up, 3), p.signal,
        `${p.model.name} v${p.model.version}`, gates(p.model)];
      for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
      tr.children[4].className = p.signal;
      return tr;
    });
    $("predictions").replaceChildren(...rows);
    showPrediction();
  }

  const gates = (m) => (m.gate_passed ? "passed the gates" : `not gated (${m.promotion})`);

  function showPrediction() {
    const p = state.predictions[state.symbol];
    const el = $("prediction");
    if (!p) { el.textContent = "No prediction yet."; delete el.dataset.symbol; return; }
    el.dataset.symbol = p.symbol;
    el.dataset.signal = p.signal;
    el.innerHTML = "";
    const lines = [
      `<b>${esc(p.symbol)}</b> ${esc(p.interval)} bar ${esc(p.bar_ts)}`,
      `predicted return <b>${pct(p.predicted_return, 3)}</b>, P(up) <b>${fmt(p.probability_up, 3)}</b>, ` +
        `direction ${esc(p.direction)} (${esc(p.direction_source)})`,
      `signal <b class="${esc(p.signal)}" data-testid="prediction-signal">${esc(p.signal)}</b>`,
      `model ${esc(p.model.name)} v${esc(p.model.version)}: <span data-testid="prediction-gates">${esc(gates(p.model))}</span>`,
    ];
    el.innerHTML = lines.map((l) => `<div>${l}</div>`).join("");
  }

  function esc(s) {
    return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // ---- risk ----------------------------------------------------------------------------------------
  async function loadRisk(symbol) {
    const el = $("risk-summary");
    let data;
    try { data = await api(`risk?symbols=${encodeURIComponent(symbol)}`); } catch (e) {
      el.textContent = `risk: ${e.message}`; el.dataset.loaded = "error"; return;
    }
    const r = data.risk[0];
    const vars = r.var.map((v) => `<tr><td>${esc(v.method)}</td><td>${v.level}</td><td>${pct(v.var)}</td><td>${pct(v.es)}</td></tr>`).join("");
    const f = r.volatility_forecast;
    el.innerHTML = `<div>as of ${esc(r.as_of)} (${esc(data.interval)}, ${r.bars} bars): volatility ${pct(r.volatility)},
      EWMA ${pct(r.ewma_volatility)}, drawdown ${pct(r.drawdown)}, max drawdown ${pct(r.max_drawdown)}</div>` +
      (f ? `<div>forecast ${pct(f.volatility)} by ${esc(f.model)} v${esc(f.version)} (${esc(f.family)}, ${esc(f.kind)})</div>` : "") +
      `<table class="small" data-testid="var-table"><thead><tr><th>method</th><th>level</th><th>VaR</th><th>ES</th></tr></thead><tbody>${vars}</tbody></table>` +
      `<div>${r.alerts.length} active alert(s)${r.alerts.map((a) => `<div class="${esc(a.severity)}">${esc(a.severity)}: ${esc(a.message)}</div>`).join("")}</div>`;
    el.classList.remove("muted");
    el.dataset.loaded = "ok";
  }

  function alert(d) {
    const li = document.createElement("li");
    li.className = d.severity;
    li.dataset.severity = d.severity;
    li.dataset.symbol = d.symbol;
    li.innerHTML = `<span class="sev">${esc(d.severity)}</span>${esc(d.symbol)} ${esc(d.interval)} ${esc(d.bar_time)}: ${esc(d.message)}`;
    const list = $("alerts");
    list.prepend(li);
    while (list.children.length > MAX_ALERTS) list.lastChild.remove();
  }

  // ---- models --------------------------------------------------------------------------------------
  async function loadModels() {
    let data;
    try { data = await api("models"); } catch (e) { $("models-table").textContent = `models: ${e.message}`; return; }
    const rows = data.models.filter((m) => m.aliases.length || m.serving).map((m) => {
      const metrics = Object.entries(m.metrics).slice(0, 4).map(([k, v]) => `${k} ${fmt(v, 4)}`).join(", ");
      return `<tr data-model="${esc(m.name)}"><td>${esc(m.name)}</td><td>${esc(m.version)}</td><td>${esc(m.aliases.join(", "))}</td>` +
        `<td>${esc(m.family)}</td><td>${m.serving ? "yes" : ""}</td><td>${esc(metrics)}</td><td>${esc(m.decision)}</td></tr>`;
    });
    $("models-table").innerHTML = rows.join("") || "<tr><td colspan=7>no champion or challenger</td></tr>";
    $("models-table").dataset.loaded = String(rows.length);
  }

  async function reload() {
    $("reload-result").textContent = "reloading…";
    try {
      const r = await api("admin/reload", { method: "POST" });
      const errors = Object.entries(r.errors).map(([k, v]) => `${k}: ${v}`).join("; ");
      $("reload-result").textContent = `reloaded: ${r.changed.length ? r.changed.join(", ") + " changed" : "no change"}` +
        (errors ? `; errors: ${errors}` : "");
      $("reload-result").dataset.outcome = errors ? "partial" : "ok";
      loadModels();
    } catch (e) { $("reload-result").textContent = `reload failed: ${e.message}`; $("reload-result").dataset.outcome = "failed"; }
  }

  // ---- pipeline ------------------------------------------------------------------------------------
  function metrics(d) {
    state.metrics[d.interval] = d;
    $("metrics").innerHTML = Object.values(state.metrics).map((m) =>
      `<tr data-interval="${esc(m.interval)}"><td>${esc(m.interval)}</td><td>${m.bars_in}</td><td>${m.processed}</td>` +
      `<td>${m.dead_lettered}</td><td>${m.lag ?? "–"}</td><td>${m.pending}</td><td>${fmt(m.bars_per_s, 1)}</td><td>${m.consumers_up}</td></tr>`).join("");
  }

  function status(d) {
    const el = $("status");
    el.dataset.state = d.state;
    el.classList.remove("muted");
    el.innerHTML = `state <b>${esc(d.state)}</b>${d.event ? `, ${esc(d.event)}` : ""}${d.message ? `: ${esc(d.message)}` : ""}; ` +
      `${d.consumers.filter((c) => c.up).length}/${d.consumers.length} consumers up` +
      (d.errors.length ? `<div class="error">${esc(d.errors[d.errors.length - 1])}</div>` : "");
  }

  // ---- sockets -------------------------------------------------------------------------------------
  const HANDLERS = { "enhanced": liveBar, "ai-predictions": prediction, "risk-alerts": alert,
    "stream-metrics": metrics, "pipeline-status": status };

  function socketBadge(channel, st, title) {
    let el = document.querySelector(`[data-testid="ws-${channel}"]`);
    if (!el) {
      el = document.createElement("span"); el.className = "socket";
      el.setAttribute("data-testid", "ws-" + channel); el.textContent = channel; $("sockets").appendChild(el);
    }
    el.dataset.state = st; el.title = title || st;
  }

  function connect(channel, attempt = 0) {
    if (!state.session) return;
    const url = new URL(`ws/${channel}`, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (state.lastSeq[channel] !== undefined) url.searchParams.set("since", String(state.lastSeq[channel]));
    const ws = new WebSocket(url);
    state.sockets[channel] = ws;
    socketBadge(channel, "connecting");
    ws.onopen = () => { ws.send(JSON.stringify({ token: state.session.access_token })); socketBadge(channel, "open"); attempt = 0; };
    ws.onmessage = (event) => {
      const m = JSON.parse(event.data);
      if (m.type === "heartbeat" || !m.data) return;
      state.lastSeq[channel] = m.seq;
      try { HANDLERS[channel](m.data); } catch (e) { console.error(channel, e); }
    };
    ws.onclose = (event) => {
      socketBadge(channel, "closed", `${event.code} ${event.reason}`);
      if (!state.session) return;
      if (event.code === 1008 && /expired|invalid token/.test(event.reason)) { signOut("Session expired: sign in again."); return; }
      const wait = Math.min(30000, 1000 * 2 ** attempt);
      state.retry[channel] = setTimeout(() => connect(channel, attempt + 1), wait);
    };
  }

  // ---- wiring --------------------------------------------------------------------------------------
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", () => signOut());
  $("symbol-form").addEventListener("submit", (e) => { e.preventDefault(); const s = $("symbol").value.trim(); if (s) pick(s); });
  $("reload").addEventListener("click", reload);
  $("models-refresh").addEventListener("click", loadModels);
  state.session = loadSession();
  if (state.session) start();
})();
