/*
 * The order page follows its order without reloading: every 2 s it asks the order's status
 * endpoint (data-status-url, JSON; see orders.views.order_status) and writes the answer into the
 * page, announcing each change through the polite live region #order-announcement. It stops when
 * the order is done, or after data-follow-seconds (counted by the server from when the order was
 * placed) with the "taking longer than usual" note. Without JavaScript the page's <noscript>
 * refresh does the same. A static file, so the Content-Security-Policy needs no 'unsafe-inline'.
 */
(function () {
  "use strict";

  var POLL_MS = 2000;

  function start() {
    var section = document.getElementById("order-progress");
    if (!section) return;
    var url = section.getAttribute("data-status-url");
    var followMs = Number(section.getAttribute("data-follow-seconds") || "0") * 1000;
    if (!url || followMs <= 0) return;
    var deadline = Date.now() + followMs;
    // The state the page was rendered with: only later changes are announced.
    var last = section.getAttribute("data-state-key");

    function text(id, value) {
      var node = document.getElementById(id);
      if (node && node.textContent !== value) node.textContent = value;
      return node;
    }

    function renderSteps(steps) {
      var list = document.getElementById("order-steps");
      if (!list || !steps) return;
      var items = steps.map(function (step) {
        var item = document.createElement("li");
        item.setAttribute("data-step", step.key);
        item.className = step.state;
        if (step.state === "current" || step.state === "failed") item.setAttribute("aria-current", "step");
        item.textContent = step.title;
        if (step.state === "done") {
          var done = document.createElement("span");
          done.className = "visually-hidden";
          done.textContent = " (done)";
          item.appendChild(done);
        }
        return item;
      });
      list.replaceChildren.apply(list, items);
    }

    function render(data) {
      var status = text("order-status", data.status);
      if (status) status.className = "status status-" + data.status;
      text("order-label", data.label);
      renderSteps(data.steps);
      if (data.confirmation) {
        var sentence = text("order-confirmation", data.confirmation.text);
        if (sentence) sentence.setAttribute("data-state", data.confirmation.state);
      }
      // A decline seen live: the page offers to pay again, as it does when loaded after one.
      var payAgain = document.getElementById("pay-again");
      if (payAgain) payAgain.hidden = data.status !== "failed";
      var key = data.status + "/" + data.step + "/" + data.confirmation_sent;
      if (key !== last) text("order-announcement", data.label);
      last = key;
    }

    function slow() {
      var note = document.getElementById("order-slow");
      if (note) note.hidden = false;
    }

    function poll() {
      if (Date.now() >= deadline) {
        slow();
        return;
      }
      fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("status " + response.status);
          return response.json();
        })
        .then(function (data) {
          render(data);
          if (!data.done) window.setTimeout(poll, POLL_MS);
        })
        // A lost answer (network blip, a restarting web process) is retried on the next tick.
        .catch(function () { window.setTimeout(poll, POLL_MS); });
    }

    window.setTimeout(poll, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
