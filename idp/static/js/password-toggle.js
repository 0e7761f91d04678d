/*
 * "Show password": wired by data attributes, the page carries no inline script (strict CSP).
 * Plain ES2020, no dependency, no build step.
 *
 * <input id="password" type="password">
 * <button type="button" data-password-toggle aria-controls="password" aria-pressed="false"
 *         data-show-label="Show password" data-hide-label="Hide password" hidden>…</button>
 *
 * The button stays hidden without this script: the field is then a plain password field.
 * Pressed, it shows the password as text (aria-pressed="true", label "Hide password"); pressed
 * again, it hides it. The password is hidden again before its form is sent, and when the page
 * comes back from the browser's history.
 */
(function () {
  "use strict";

  function wire(button) {
    var input = document.getElementById(button.getAttribute("aria-controls"));
    if (!input || input.type !== "password") {
      return;
    }
    var showLabel = button.getAttribute("data-show-label") || button.textContent;
    var hideLabel = button.getAttribute("data-hide-label") || button.textContent;

    function show(visible) {
      input.type = visible ? "text" : "password";
      button.setAttribute("aria-pressed", visible ? "true" : "false");
      button.textContent = visible ? hideLabel : showLabel;
    }

    button.addEventListener("click", function () {
      show(input.type === "password");
    });
    if (input.form) {
      input.form.addEventListener("submit", function () {
        show(false);
      });
    }
    window.addEventListener("pageshow", function () {
      show(false);
    });
    show(false);
    button.hidden = false;
  }

  document.querySelectorAll("button[data-password-toggle]").forEach(wire);
})();
