/* coremetrics tag: personalized content and activity tracking. Never throws into the page. */
(function (window, document) {
  "use strict";
  var config = window.__cmConfig || {};
  var name = window.CoremetricsObject || "cm";
  var VISITOR_COOKIE = "_cmv";
  var SESSION_COOKIE = "_cms";
  var QUEUE_KEY = "_cmq";
  var MAX_QUEUE = 200;
  var MAX_BATCH = 50;
  var FIELDS = ["product_id", "order_id", "value", "currency", "email"];

  var state = { visitor: null, session: null, placements: [], started: false, backoff: 1000, timer: null };

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { if (window.console) console.warn("coremetrics:", e); }
    };
  }

  function cookieGet(key) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === key) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }

  function cookieSet(key, value, days) {
    document.cookie = key + "=" + encodeURIComponent(value) + "; path=/; max-age=" +
      Math.round(days * 86400) + "; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function url(path, params) {
    var query = ["k=" + encodeURIComponent(config.key)];
    for (var key in params) {
      if (params[key] !== null && params[key] !== undefined) query.push(key + "=" + encodeURIComponent(params[key]));
    }
    return config.base + path + "?" + query.join("&");
  }

  // Session: the cookie holds "id|last activity in ms"; the server decides when it has ended.
  function sessionRead() {
    var raw = cookieGet(SESSION_COOKIE);
    if (!raw) return { id: null, idle: null };
    var parts = raw.split("|");
    return { id: parts[0], idle: Math.max(0, (Date.now() - Number(parts[1] || 0)) / 1000) };
  }

  function sessionTouch() {
    if (state.session) cookieSet(SESSION_COOKIE, state.session + "|" + Date.now(), config.idleMinutes / 1440 * 2);
  }

  function identify() {
    var visitor = cookieGet(VISITOR_COOKIE);
    if (visitor) { state.visitor = visitor; return Promise.resolve(); }
    return fetch(url("/d/v1/visitor", {}), { method: "POST", credentials: "omit" })
      .then(function (r) { if (!r.ok) throw new Error("visitor id: HTTP " + r.status); return r.json(); })
      .then(function (data) {
        state.visitor = data.visitor;
        state.session = data.session;
        cookieSet(VISITOR_COOKIE, data.visitor, config.cookieDays);
        sessionTouch();
      });
  }

  function placementElements(key) {
    var found = [];
    var all = document.querySelectorAll("[data-cm-placement]");
    for (var i = 0; i < all.length; i++) if (all[i].getAttribute("data-cm-placement") === key) found.push(all[i]);
    return found;
  }

  function build(content) {
    var type = content.type, el;
    if (type === "image") {
      var img = document.createElement("img");
      img.src = content.url;
      img.alt = content.alt || "";
      if (!content.click_url) return img;
      el = document.createElement("a");
      el.href = content.click_url;
      el.appendChild(img);
      return el;
    }
    if (type === "video" || type === "audio") {
      el = document.createElement(type);
      el.src = content.url;
      el.controls = true;
      if (type === "video") { el.muted = true; el.autoplay = true; el.setAttribute("playsinline", ""); }
      return el;
    }
    if (type === "html") {
      // Marketer-authored content from the console, never a visitor's or query string's text.
      el = document.createElement("div");
      el.innerHTML = content.html;
      return el;
    }
    return null;
  }

  var render = safe(function (answer) {
    var content = answer.content;
    var elements = placementElements(answer.placement);
    for (var i = 0; i < elements.length; i++) {
      var host = elements[i];
      host.setAttribute("data-cm-source", answer.source);
      host.setAttribute("data-cm-version", answer.version === null ? "" : String(answer.version));
      if (!content) continue;
      host.setAttribute("data-cm-content", String(content.id));
      if (content.type === "script") {
        var script = document.createElement("script");
        script.src = content.url;
        script.async = true;
        if (config.nonce) script.nonce = config.nonce;
        host.appendChild(script);
        continue;
      }
      var node = build(content);
      if (!node) continue;
      while (host.firstChild) host.removeChild(host.firstChild);
      host.appendChild(node);
    }
  });

  function placementKeys() {
    var keys = state.placements.slice();
    var all = document.querySelectorAll("[data-cm-placement]");
    for (var i = 0; i < all.length; i++) {
      var key = all[i].getAttribute("data-cm-placement");
      if (keys.indexOf(key) < 0) keys.push(key);
    }
    return keys;
  }

  function deliver() {
    var session = sessionRead();
    var params = {
      v: state.visitor, s: state.session || session.id, i: state.session ? null : session.idle,
      p: placementKeys().join(","), u: location.href.slice(0, 2000), r: document.referrer.slice(0, 2000)
    };
    return fetch(url("/d/v1/query", params), { credentials: "omit" })
      .then(function (r) { if (!r.ok) throw new Error("query: HTTP " + r.status); return r.json(); })
      .then(function (data) {
        state.session = data.session;
        sessionTouch();
        for (var i = 0; i < data.placements.length; i++) render(data.placements[i]);
        document.documentElement.setAttribute("data-cm-ready", "1");
      });
  }

  // Events wait in localStorage until the server has them, so a reload or navigation keeps
  // them; each has its own id, so a retry that arrives twice is counted once.
  function queueRead() {
    try { return JSON.parse(localStorage.getItem(QUEUE_KEY) || "[]"); } catch (e) { return []; }
  }

  function queueWrite(events) {
    try { localStorage.setItem(QUEUE_KEY, JSON.stringify(events.slice(-MAX_QUEUE))); } catch (e) { /* full or denied */ }
  }

  function queueRemove(ids) {
    queueWrite(queueRead().filter(function (event) { return ids.indexOf(event.id) < 0; }));
  }

  function batchBody(events) {
    return JSON.stringify({ visitor: state.visitor, session: state.session, sent_at: Date.now(), events: events });
  }

  function flush() {
    state.timer = null;
    if (!state.visitor || !state.session) return;
    var events = queueRead().slice(0, MAX_BATCH);
    if (!events.length) return;
    var ids = events.map(function (event) { return event.id; });
    fetch(url("/c/v1/collect", {}), {
      method: "POST", body: batchBody(events), keepalive: true, credentials: "omit",
      headers: { "Content-Type": "text/plain" }
    }).then(function (r) {
      if (r.status >= 500 || r.status === 429) throw new Error("collect: HTTP " + r.status);
      if (!r.ok && window.console) console.warn("coremetrics: events refused", r.status);
      queueRemove(ids);
      state.backoff = 1000;
      if (queueRead().length) schedule(0);
    }).catch(function () {
      state.backoff = Math.min(state.backoff * 2, 60000);
      schedule(state.backoff);
    });
  }

  function schedule(delay) {
    if (!state.timer) state.timer = setTimeout(safe(flush), delay);
  }

  var flushOnHide = safe(function () {
    if (!state.visitor || !state.session || !navigator.sendBeacon) return;
    var events = queueRead().slice(0, MAX_BATCH);
    if (!events.length) return;
    var blob = new Blob([batchBody(events)], { type: "text/plain" });
    if (navigator.sendBeacon(url("/c/v1/collect", {}), blob)) {
      queueRemove(events.map(function (event) { return event.id; }));
    }
  });

  function track(type, data) {
    data = data || {};
    var event = { id: uuid(), type: type, at: Date.now(), url: location.href.slice(0, 2000), referrer: document.referrer.slice(0, 2000), properties: {} };
    for (var key in data) {
      if (FIELDS.indexOf(key) >= 0) event[key] = data[key];
      else if (key === "items" && data.items && data.items.length !== undefined) event.properties.items = data.items.length;
      else if (data[key] === null || typeof data[key] !== "object") event.properties[key] = data[key];
    }
    if (type !== "page_view" && type !== "product_view" && type !== "cart_add" && type !== "cart_remove" && type !== "purchase") {
      event.properties.name = type;
      event.type = "custom";
    }
    var events = queueRead();
    events.push(event);
    queueWrite(events);
    sessionTouch();
    schedule(500);
  }

  var command = safe(function (args) {
    var verb = args[0];
    if (verb === "placement") {
      if (state.placements.indexOf(args[1]) < 0) state.placements.push(args[1]);
    } else if (verb === "track") {
      track(args[1], args[2]);
    } else if (verb === "config") {
      for (var key in args[1]) config[key] = args[1][key];
    }
  });

  var start = safe(function () {
    if (state.started) return;
    state.started = true;
    identify().then(deliver).then(function () { schedule(0); }).catch(function (e) {
      if (window.console) console.warn("coremetrics:", e && e.message);
      document.documentElement.setAttribute("data-cm-ready", "error");
    });
  });

  var queued = (window[name] && window[name].q) || [];
  var api = function () { command(arguments); };
  api.loaded = true;
  window[name] = api;
  for (var i = 0; i < queued.length; i++) command(queued[i]);
  window.addEventListener("pagehide", flushOnHide);
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") flushOnHide(); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window, document);
