/* coremetrics tag: personalized content and activity tracking (docs/tag.md).
   Never throws into the page; never inserts a visitor's or a URL's text as HTML. */
(function (window, document, navigator) {
  "use strict";
  var config = window.__cmConfig || {};
  var script = document.currentScript;
  var base = config.base || (script && script.src ? script.src.replace(/\/t\/v1\/[^/]*$/, "") : "");
  var name = window.CoremetricsObject || "cm";
  var VISITOR = "_cmv", SESSION = "_cms", QUEUE = "_cmq";
  var MAX_QUEUE = 200, MAX_BYTES = 30000, MAX_EVENT = 8000;
  var TYPES = ["page_view", "product_view", "category_view", "search", "cart_add", "cart_remove", "checkout", "purchase"];
  var FIELDS = ["product_id", "order_id", "value", "currency", "category", "query"];
  var EMAIL = /^[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+$/;

  // A browser-level privacy signal is final. Otherwise the visitor's stored choice (_cmc) holds
  // until the page reports a new one with cm('consent', ...); without one, the client's mode.
  var CONSENT = "_cmc";
  var signal = navigator.globalPrivacyControl === true || navigator.doNotTrack === "1" || window.doNotTrack === "1";
  var stored = null;
  try { stored = cookieGet(CONSENT); } catch (e) { signal = true; /* no cookies here: track nothing */ }
  var state = {
    consent: signal ? "denied" : stored === "granted" || stored === "denied" ? stored : config.consent === "required" ? "pending" : "granted",
    visitor: null, session: null, held: [], placements: [], started: false, sending: false,
    backoff: 1000, timer: null, maxBatch: 50, nonce: config.nonce || (script && script.nonce) || "", retried: false
  };

  function warn(message) { if (window.console && console.warn) console.warn("coremetrics: " + message); }

  function safe(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) { warn(e && e.message); }
    };
  }

  function decode(text) {
    try { return decodeURIComponent(text); } catch (e) { return text; } // a stray "%"
  }

  function cookieGet(key) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === key) return decode(parts[i].slice(eq + 1));
    }
    return null;
  }

  // The widest domain the browser accepts (never a public suffix), so that www.shop.example
  // and checkout.shop.example share one visitor; an IP address or a one-label host stays host-only.
  function cookieDomain() {
    if (config.cookieDomain) return config.cookieDomain;
    if (state.domain !== undefined) return state.domain;
    var host = location.hostname, labels = host.split(".");
    state.domain = "";
    if (labels.length < 2 || /^[\d.]+$/.test(host) || host.indexOf(":") >= 0) return "";
    for (var i = labels.length - 2; i >= 0; i--) {
      var domain = labels.slice(i).join(".");
      document.cookie = "_cmt=1; path=/; domain=" + domain;
      if (cookieGet("_cmt")) {
        document.cookie = "_cmt=; path=/; max-age=0; domain=" + domain;
        return (state.domain = domain);
      }
    }
    return "";
  }

  function cookieSet(key, value, days) {
    var domain = cookieDomain();
    document.cookie = key + "=" + encodeURIComponent(value) + "; path=/; max-age=" + Math.round(days * 86400) +
      (domain ? "; domain=" + domain : "") + "; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
  }

  // Both the domain cookie and any host-only one of the same name (set by an older tag).
  function cookieDelete(key) {
    if (cookieGet(key) === null) return;
    document.cookie = key + "=; path=/; max-age=0";
    cookieSet(key, "", 0);
  }

  function forget() {
    cookieDelete(VISITOR);
    cookieDelete(SESSION);
    try { localStorage.removeItem(QUEUE); } catch (e) { /* storage denied */ }
    state.visitor = state.session = null;
    state.held = [];
  }

  // Version 7 UUIDs (RFC 9562): the time in the first 48 bits, so that the database's index
  // of event ids grows at its end (random ids made loading cost about 1 us more an event).
  function uuid() {
    var b = crypto.getRandomValues(new Uint8Array(16)), t = Date.now(), i;
    for (i = 5; i >= 0; i--) { b[i] = t % 256; t = Math.floor(t / 256); }
    b[6] = (b[6] & 15) | 112; b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function endpoint(path, params) {
    var query = ["k=" + encodeURIComponent(config.key)];
    for (var key in params) {
      if (params[key] !== null && params[key] !== undefined) query.push(key + "=" + encodeURIComponent(params[key]));
    }
    return base + path + "?" + query.join("&");
  }

  function campaignOfPage() {
    var match = /[?&]utm_campaign=([^&#]*)/.exec(location.search);
    return match ? decode(match[1].replace(/\+/g, " ")) : "";
  }

  // The session cookie holds "id|last activity ms|campaign"; a new campaign starts a new session,
  // and the server ends one that is idle or too old.
  function sessionRead() {
    var parts = (cookieGet(SESSION) || "").split("|");
    var campaign = campaignOfPage();
    if (!parts[0] || (campaign && campaign !== parts[2])) return { id: null, idle: null, campaign: campaign };
    return { id: parts[0], idle: Math.max(0, (Date.now() - Number(parts[1] || 0)) / 1000), campaign: parts[2] || "" };
  }

  function sessionTouch() {
    if (state.session && state.consent === "granted") {
      cookieSet(SESSION, state.session + "|" + Date.now() + "|" + (state.campaign || ""), config.idleMinutes / 720);
    }
  }

  // One request at a time: a consent given while the page starts must not issue two ids.
  function identify() {
    var visitor = cookieGet(VISITOR);
    if (visitor) { state.visitor = visitor; return Promise.resolve(); }
    if (state.identifying) return state.identifying;
    state.identifying = fetch(endpoint("/d/v1/visitor", {}), { method: "POST", credentials: "omit" })
      .then(function (r) {
        // 403: the browser sends Global Privacy Control without telling the page; honour it.
        if (r.status === 403) { state.consent = "denied"; forget(); }
        if (!r.ok) throw new Error("visitor id: HTTP " + r.status);
        return r.json();
      })
      .then(function (data) {
        state.identifying = null;
        // Declined while the id was on its way: keep nothing.
        if (state.consent !== "granted") throw new Error("consent withdrawn");
        state.visitor = data.visitor;
        state.session = data.session;
        cookieSet(VISITOR, data.visitor, config.cookieDays);
        sessionTouch();
      }, function (e) { state.identifying = null; throw e; });
    return state.identifying;
  }

  function placementElements(key) {
    var found = [], all = document.querySelectorAll("[data-cm-placement]");
    for (var i = 0; i < all.length; i++) if (all[i].getAttribute("data-cm-placement") === key) found.push(all[i]);
    return found;
  }

  function placementKeys() {
    var keys = state.placements.slice(), all = document.querySelectorAll("[data-cm-placement]");
    for (var i = 0; i < all.length; i++) {
      var key = all[i].getAttribute("data-cm-placement");
      if (keys.indexOf(key) < 0) keys.push(key);
    }
    return keys;
  }

  function element(content) {
    var type = content.type, el;
    if (type === "video" || type === "audio") {
      el = document.createElement(type);
      el.src = content.url;
      el.controls = true;
      el.preload = "auto";
      if (type === "video") { el.muted = true; el.autoplay = true; el.setAttribute("playsinline", ""); }
      return el;
    }
    if (type === "html") {
      // Marketer-authored content from the console, never text from a visitor or a URL.
      el = document.createElement("div");
      el.innerHTML = content.html;
      return el;
    }
    if (type === "script") {
      el = document.createElement("script");
      el.src = content.url;
      el.async = true;
      if (state.nonce) el.nonce = state.nonce;
      return el;
    }
    return null;
  }

  function mark(host, answer) {
    host.setAttribute("data-cm-source", answer.source);
    host.setAttribute("data-cm-version", answer.version === null ? "" : String(answer.version));
    if (answer.content) host.setAttribute("data-cm-content", String(answer.content.id));
  }

  function swap(host, node) {
    while (host.firstChild) host.removeChild(host.firstChild);
    host.appendChild(node);
  }

  // Resolves when the placement shows its answer, or keeps its default (no empty box): an image
  // replaces the default only once it has loaded, and not after the deadline.
  function render(answer, deadline) {
    return new Promise(function (resolve) {
      var content = answer.content, hosts = placementElements(answer.placement);
      if (!content || !hosts.length) return resolve();
      if (content.type !== "image") {
        hosts.forEach(function (host) {
          var node = element(content);
          if (!node) return;
          mark(host, answer);
          if (content.type === "script") host.appendChild(node); else swap(host, node);
        });
        return resolve();
      }
      var image = new Image();
      image.onload = function () {
        if (Date.now() <= deadline) {
          hosts.forEach(function (host) {
            var img = document.createElement("img"), node = img;
            img.src = content.url;
            img.alt = content.alt || "";
            if (content.click_url) { node = document.createElement("a"); node.href = content.click_url; node.appendChild(img); }
            mark(host, answer);
            swap(host, node);
          });
        }
        resolve();
      };
      image.onerror = function () { resolve(); };
      image.src = content.url;
      setTimeout(resolve, Math.max(0, deadline - Date.now()));
    });
  }

  function ready(value) { document.documentElement.setAttribute("data-cm-ready", value); }

  function deliver() {
    var keys = placementKeys(), deadline = Date.now() + (config.timeout || 1500), timedOut = false;
    var identified = state.consent === "granted" && !!state.visitor;
    var session = sessionRead();
    state.campaign = session.campaign;
    var params = identified
      ? { v: state.visitor, s: state.session || session.id, i: state.session ? null : session.idle, p: keys.join(","),
          u: location.href.slice(0, 1000), r: document.referrer.slice(0, 1000) }
      : { a: 1, p: keys.join(",") };
    var timer = setTimeout(function () { timedOut = true; ready("timeout"); }, deadline - Date.now());
    return fetch(endpoint("/d/v1/query", params), { credentials: "omit" })
      .then(function (r) {
        return r.json().then(function (data) {
          if (r.status === 400 && identified && /^v /.test(data.error) && !state.retried) {
            // An id this server no longer recognises (its key was retired): start afresh.
            state.retried = true;
            cookieDelete(VISITOR);
            clearTimeout(timer);
            return identify().then(deliver);
          }
          if (!r.ok) throw new Error("query: " + (data.error || r.status));
          if (data.session) { state.session = data.session; sessionTouch(); }
          if (timedOut) return;
          return Promise.all(data.placements.map(function (answer) { return render(answer, deadline); }))
            .then(function () { if (!timedOut) { clearTimeout(timer); ready("1"); } });
        });
      })
      .catch(function (e) { clearTimeout(timer); throw e; });
  }

  // localStorage keeps events across pages; where it is blocked or full, memory keeps them
  // for this page.
  function queueRead() {
    if (state.memory && state.unstored) return state.memory;
    try { return JSON.parse(localStorage.getItem(QUEUE) || "[]"); } catch (e) { return state.memory || []; }
  }

  function queueWrite(events) {
    if (state.consent !== "granted") return;
    events = events.slice(-MAX_QUEUE);
    state.memory = events;
    try { localStorage.setItem(QUEUE, JSON.stringify(events)); state.unstored = false; } catch (e) { state.unstored = true; }
  }

  function queueRemove(ids) {
    queueWrite(queueRead().filter(function (event) { return ids.indexOf(event.id) < 0; }));
  }

  // The oldest events that fit one request: at most maxBatch of them and MAX_BYTES of JSON.
  function batch() {
    var events = queueRead(), chosen = [], bytes = 0;
    for (var i = 0; i < events.length && chosen.length < state.maxBatch; i++) {
      bytes += JSON.stringify(events[i]).length;
      if (chosen.length && bytes > MAX_BYTES) break;
      chosen.push(events[i]);
    }
    return chosen;
  }

  function body(events) {
    return JSON.stringify({ visitor: state.visitor, session: state.session, sent_at: Date.now(), events: events });
  }

  function ids(events) { return events.map(function (event) { return event.id; }); }

  function flush() {
    state.timer = null;
    if (state.sending || !state.visitor || !state.session) return;
    var events = batch();
    if (!events.length) return;
    state.sending = true;
    fetch(endpoint("/c/v1/collect", {}), {
      method: "POST", body: body(events), keepalive: true, credentials: "omit", headers: { "Content-Type": "text/plain" }
    }).then(function (r) {
      state.sending = false;
      if (r.status === 413 && events.length > 1) { state.maxBatch = Math.max(1, events.length >> 1); return schedule(0); }
      if (r.status >= 500 || r.status === 429 || r.status === 404) throw new Error("collect: HTTP " + r.status);
      // Accepted, or refused for good (400, 403, 413 of one event): either way not to be sent again.
      if (!r.ok) warn("events refused (HTTP " + r.status + ")");
      r.json().then(function (data) { if (data.rejected && data.rejected.length) warn(data.rejected.length + " events refused"); }, function () {});
      queueRemove(ids(events));
      state.backoff = 1000;
      if (queueRead().length) schedule(0);
    }).catch(function () {
      state.sending = false;
      state.backoff = Math.min(state.backoff * 2, 60000);
      schedule(state.backoff);
    });
  }

  function schedule(delay) {
    if (!state.timer) state.timer = setTimeout(safe(flush), delay);
  }

  var flushOnHide = safe(function () {
    if (!state.visitor || !state.session || !navigator.sendBeacon) return;
    var events = batch();
    if (events.length && navigator.sendBeacon(endpoint("/c/v1/collect", {}), new Blob([body(events)], { type: "text/plain" }))) {
      queueRemove(ids(events));
    }
  });

  function enqueue(event) {
    var events = queueRead();
    events.push(event);
    queueWrite(events);
    sessionTouch();
    schedule(500);
  }

  function track(type, data) {
    if (state.consent === "denied" || typeof type !== "string") return;
    data = data || {};
    var event = { id: uuid(), type: type, at: Date.now(), url: location.href.slice(0, 1000), referrer: document.referrer.slice(0, 1000), properties: {} };
    for (var key in data) {
      var value = data[key];
      if (FIELDS.indexOf(key) >= 0) event[key] = value;
      else if (key === "email") { if (typeof value === "string" && EMAIL.test(value.trim())) event.email = value.trim(); }
      else if (key === "items" && value && value.length !== undefined) {
        event.items = Array.prototype.slice.call(value, 0, 50).map(function (item) {
          return { product_id: String(item.product_id || item.id || ""), quantity: Number(item.quantity || 1), price: Number(item.price || 0) };
        });
      } else if (value === null || typeof value !== "object") event.properties[key] = value;
    }
    if (TYPES.indexOf(type) < 0) { event.properties.name = type; event.type = "custom"; }
    // The server refuses an event it cannot store; better to drop oversized properties here.
    if (unescape(encodeURIComponent(JSON.stringify(event))).length > MAX_EVENT) {
      warn("event properties too large; dropped");
      event.properties = event.type === "custom" ? { name: type } : {};
    }
    if (state.consent === "pending") { if (state.held.length < 50) state.held.push(event); return; }
    enqueue(event);
  }

  function consent(choice) {
    if (signal || (choice !== "granted" && choice !== "denied") || choice === state.consent) return;
    state.consent = choice;
    cookieSet(CONSENT, choice, config.cookieDays);
    if (choice === "denied") return forget();
    var held = state.held;
    state.held = [];
    identify().then(function () { held.forEach(enqueue); schedule(0); }).catch(function (e) { warn(e && e.message); });
  }

  var command = safe(function (args) {
    var verb = args[0];
    if (verb === "placement" && typeof args[1] === "string") {
      if (state.placements.indexOf(args[1]) < 0) state.placements.push(args[1]);
    } else if (verb === "track") {
      track(args[1], args[2]);
    } else if (verb === "consent") {
      consent(args[1]);
    } else if (verb === "config" && args[1]) {
      for (var key in args[1]) config[key] = args[1][key];
      if (args[1].nonce) state.nonce = args[1].nonce;
    }
  });

  var start = safe(function () {
    if (state.started) return;
    state.started = true;
    if (signal) forget();
    var first = state.consent === "granted" ? identify() : Promise.resolve();
    // Without an id the page still gets each campaign's default content.
    first.catch(function (e) { warn(e && e.message); }).then(deliver).then(function () { schedule(0); }).catch(function (e) {
      warn(e && e.message);
      ready("error");
    });
  });

  if (window[name] && window[name].loaded) return; // the tag was included twice
  var queued = (window[name] && window[name].q) || [];
  var api = function () { command(arguments); };
  api.loaded = true;
  window[name] = api;
  for (var i = 0; i < queued.length; i++) command(queued[i]);
  window.addEventListener("pagehide", flushOnHide);
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") flushOnHide(); });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})(window, document, navigator);
