/*
 * The checkout's "Place order" says that it is working: once the form is sent, the button reads
 * "Placing order…", is disabled (a second press has nothing to send; the server refuses a second
 * order for the same token anyway) and the form is aria-busy. When the browser shows the page
 * again from its back-forward cache, the button is given back. A static file, so the
 * Content-Security-Policy needs no 'unsafe-inline'.
 */
(function () {
  "use strict";

  function start() {
    var form = document.getElementById("checkout-form");
    var button = document.getElementById("place-order");
    if (!form || !button) return;
    var label = button.textContent;

    form.addEventListener("submit", function () {
      // After this event the browser has taken the form's data: disabling now loses nothing.
      window.setTimeout(function () {
        button.disabled = true;
        button.textContent = "Placing order…";
        form.setAttribute("aria-busy", "true");
      }, 0);
    });

    window.addEventListener("pageshow", function (event) {
      if (!event.persisted) return;
      button.disabled = false;
      button.textContent = label;
      form.removeAttribute("aria-busy");
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
