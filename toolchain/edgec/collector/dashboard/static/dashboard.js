// edgec fleet dashboard: refreshes the page's fragments without a full reload.
// Each element with data-refresh="URL" is fetched again every data-every seconds (while the tab
// is visible) and its content replaced when the server's HTML changed. The server escapes
// everything it renders; no script is ever evaluated from a fragment.
"use strict";
(function () {
  var MIN_SECONDS = 1;

  function refresh(el) {
    if (document.hidden || el.dataset.busy === "1") {
      return;
    }
    el.dataset.busy = "1";
    fetch(el.dataset.refresh, {credentials: "same-origin", cache: "no-store",
                               headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (response.status === 401) {  // the session ended: show the sign-in page
          window.location.reload();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== el.dataset.last) {
          el.dataset.last = html;
          el.innerHTML = html;
          el.dataset.updated = String(Date.now());
          el.dispatchEvent(new CustomEvent("edgec:refreshed", {bubbles: true}));
        }
      })
      .catch(function () { /* the collector restarts or the network blinks: the next round retries */ })
      .then(function () { el.dataset.busy = "0"; });
  }

  function start() {
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
