// edgec fleet dashboard: refreshes the page's fragments without a full reload.
// Each element with data-refresh="URL" is fetched again every data-every seconds (while the tab
// is visible) with the ETag of what it shows: the server answers 304 when nothing changed (and
// then reads and renders nothing), else the new HTML, which replaces the content. Ages
// (<time data-at="EPOCH">) are counted on here, on the server's clock. The server escapes
// everything it renders; no script is ever evaluated from a fragment.
"use strict";
(function () {
  var MIN_SECONDS = 1;
  var skew = 0;  // the server's clock minus this browser's, in seconds

  function ago(seconds) {  // as the server writes it (pages.py: _ago)
    if (seconds < 120) { return seconds.toFixed(0) + " s"; }
    if (seconds < 7200) { return (seconds / 60).toFixed(0) + " min"; }
    if (seconds < 172800) { return (seconds / 3600).toFixed(1) + " h"; }
    return (seconds / 86400).toFixed(0) + " d";
  }

  function tick() {
    var now = Date.now() / 1000 + skew;
    Array.prototype.forEach.call(document.querySelectorAll("time[data-at]"), function (el) {
      var text = ago(Math.max(0, now - parseFloat(el.dataset.at)));
      if (el.textContent !== text) {
        el.textContent = text;
      }
    });
  }

  function refresh(el) {
    if (document.hidden || el.dataset.busy === "1") {
      return;
    }
    el.dataset.busy = "1";
    var headers = {"Accept": "text/html"};
    if (el.dataset.etag) {
      headers["If-None-Match"] = el.dataset.etag;
    }
    var tag = null;
    fetch(el.dataset.refresh, {credentials: "same-origin", cache: "no-store", headers: headers})
      .then(function (response) {
        if (response.status === 401) {  // the session ended: show the sign-in page
          window.location.reload();
          return null;
        }
        if (response.status === 304 || !response.ok) {  // unchanged, or the next round retries
          return null;
        }
        tag = response.headers.get("ETag");
        return response.text();
      })
      .then(function (html) {
        if (html !== null && html !== el.dataset.last) {
          el.dataset.last = html;
          el.innerHTML = html;
          el.dataset.updated = String(Date.now());
          tick();
          el.dispatchEvent(new CustomEvent("edgec:refreshed", {bubbles: true}));
        }
        if (html !== null) {
          if (tag) { el.dataset.etag = tag; } else { delete el.dataset.etag; }
        }
      })
      .catch(function () { /* the collector restarts or the network blinks: the next round retries */ })
      .then(function () { el.dataset.busy = "0"; });
  }

  function start() {
    var serverNow = parseFloat(document.body.dataset.now || "");
    if (!isNaN(serverNow)) {
      skew = serverNow - Date.now() / 1000;
    }
    window.setInterval(tick, 1000);
    var items = document.querySelectorAll("[data-refresh]");
    Array.prototype.forEach.call(items, function (el) {
      var seconds = Math.max(MIN_SECONDS, parseFloat(el.dataset.every || "5"));
      window.setInterval(function () { refresh(el); }, seconds * 1000);
    });
    document.documentElement.dataset.live = "1";
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
