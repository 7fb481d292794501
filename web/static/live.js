// Live pages (see web/live.py): the page opens the gateway's live stream with a single-use stream
// ticket from the web client, and when an event concerns it, fetches itself again and swaps its
// [data-live-region] parts in place. A part where the person is typing is left until they leave it;
// a part that is swapped keeps the <details> the person opened (a chart's figures) open, and the
// focus on the summary that had it.
// Pages arrive by full loads and by htmx swaps (hx-boost): the stream follows the current page.
(function () {
  if (window.cocreateLive) { return; }
  var state = {key: null, source: null, lastId: null, delay: 1000, retry: null, refresh: null, pending: false,
               generation: 0, connecting: false};
  window.cocreateLive = state;

  function marker() { return document.getElementById("live"); }
  function keyOf(el) { return el ? (el.getAttribute("data-project") || "") + "|" + (el.getAttribute("data-community") || "") : null; }

  function stop() {
    state.generation += 1;  // whatever a previous page started is dropped when it answers
    state.connecting = false;
    if (state.source) { state.source.close(); }
    clearTimeout(state.retry); clearTimeout(state.refresh);
    state.retry = null; state.source = null; state.key = null; state.lastId = null; state.delay = 1000; state.pending = false;
  }

  function later() {
    var el = marker();
    state.connecting = false;
    if (el) { el.setAttribute("data-state", "waiting"); }
    clearTimeout(state.retry);
    state.retry = setTimeout(function () { state.retry = null; connect(); }, state.delay);
    state.delay = Math.min(state.delay * 2, 30000);
  }

  function connect() {
    var el = marker();
    var generation = state.generation;
    if (!el || keyOf(el) !== state.key) { return; }
    state.connecting = true;
    fetch(el.getAttribute("data-ticket"), {
      method: "POST", credentials: "same-origin",
      headers: {"X-CSRFToken": el.getAttribute("data-csrf"), "Accept": "application/json"}
    }).then(function (reply) {
      if (reply.status === 401 || reply.status === 404 || reply.status === 403) {
        el.setAttribute("data-state", "off"); return null;  // signed out, or live pages are off
      }
      if (!reply.ok) { throw new Error("ticket " + reply.status); }
      return reply.json();
    }).then(function (issued) {
      if (generation !== state.generation) { return; }
      state.connecting = false;
      if (!issued) { return; }
      var url = issued.url + (state.lastId ? "&last_event_id=" + encodeURIComponent(state.lastId) : "");
      var source = new EventSource(url);
      state.source = source;
      source.onopen = function () { state.delay = 1000; var m = marker(); if (m) { m.setAttribute("data-state", "open"); } };
      source.onmessage = function (message) {
        if (message.lastEventId) { state.lastId = message.lastEventId; }
        var m = marker();
        if (m && concerns(m, message.data)) { schedule(); }
      };
      // The gateway ends a stream after a few minutes, and a ticket opens one stream once: on any
      // error, close it and come back with a new ticket, after the last event seen.
      source.onerror = function () { source.close(); if (state.source === source) { state.source = null; later(); } };
    }).catch(function () {
      if (generation === state.generation) { state.connecting = false; later(); }
    });
  }

  function concerns(el, data) {
    var project = el.getAttribute("data-project");
    return !project || (data || "").indexOf(project) !== -1;
  }

  function schedule() {
    clearTimeout(state.refresh);
    state.refresh = setTimeout(refresh, 400);
  }

  function busy(region) {
    var active = document.activeElement;
    if (active && region.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) { return true; }
    var fields = region.querySelectorAll("input, textarea, select");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "hidden" || f.type === "submit") { continue; }
      if (f.tagName === "SELECT") {
        for (var j = 0; j < f.options.length; j++) { if (f.options[j].selected !== f.options[j].defaultSelected) { return true; } }
      } else if (f.type === "checkbox" || f.type === "radio") {
        if (f.checked !== f.defaultChecked) { return true; }
      } else if (f.value !== f.defaultValue) { return true; }
    }
    return false;
  }

  // A <details> is known by the nearest ancestor that has an id or is labelled (a section), and
  // its place among that ancestor's <details>: the same template gives the same key in the new part.
  function detailsKey(details, region) {
    var owner = details.parentElement;
    while (owner && owner !== region && !owner.id && !owner.getAttribute("aria-labelledby")) { owner = owner.parentElement; }
    owner = owner || region;
    var name = owner === region ? "" : (owner.id || "@" + owner.getAttribute("aria-labelledby"));
    return name + "#" + Array.prototype.indexOf.call(owner.querySelectorAll("details"), details);
  }

  // What the person opened stays open in the part that replaces it; returns the summary to focus.
  function carryOver(region, node) {
    var opened = {}, focusedKey = null, active = document.activeElement;
    region.querySelectorAll("details").forEach(function (d) {
      var key = detailsKey(d, region);
      if (d.open) { opened[key] = true; }
      var summary = d.querySelector("summary");
      if (summary && summary === active) { focusedKey = key; }
    });
    var focused = null;
    node.querySelectorAll("details").forEach(function (d) {
      var key = detailsKey(d, node);
      if (opened[key]) { d.open = true; }
      if (key === focusedKey) { focused = d.querySelector("summary"); }
    });
    return focused;
  }

  function refresh() {
    var el = marker();
    if (!el) { return; }
    var key = state.key;
    fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html", "X-Live-Refresh": "1"}}).then(function (reply) {
      if (!reply.ok || reply.redirected) { return null; }  // signed out meanwhile, or an error page
      return reply.text();
    }).then(function (html) {
      if (!html || state.key !== key) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var kept = false;
      document.querySelectorAll("[data-live-region]").forEach(function (region) {
        var replacement = fresh.getElementById(region.id);
        if (!replacement) { return; }
        if (busy(region)) { kept = true; return; }
        var node = document.importNode(replacement, true);
        var focused = carryOver(region, node);
        region.replaceWith(node);
        if (focused) { focused.focus({preventScroll: true}); }
        if (window.htmx) { window.htmx.process(node); }
      });
      state.pending = kept;
      var status = document.getElementById("live-status");
      if (status) {
        // China Standard Time, like every time on the pages
        var time = new Intl.DateTimeFormat("en-GB", {hour: "2-digit", minute: "2-digit", timeZone: "Asia/Shanghai"});
        status.textContent = status.getAttribute("data-updated") + " " + time.format(new Date());
      }
      el.setAttribute("data-updates", String(Number(el.getAttribute("data-updates") || "0") + 1));
      document.dispatchEvent(new CustomEvent("cocreate:live-updated"));
    }).catch(function () { /* the next event tries again */ });
  }

  function scan() {
    var el = marker();
    var key = keyOf(el);
    if (el && key === state.key && (state.source || state.connecting || state.retry)) {
      if (state.source && state.source.readyState === 1) { el.setAttribute("data-state", "open"); }
      return;
    }
    stop();
    if (!el) { return; }
    state.key = key;
    connect();
  }

  // A part left alone while the person typed is brought up to date when they leave it.
  document.addEventListener("focusout", function () { if (state.pending) { schedule(); } });
  document.addEventListener("htmx:afterSettle", scan);
  window.addEventListener("pagehide", stop);
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", scan); } else { scan(); }
})();
