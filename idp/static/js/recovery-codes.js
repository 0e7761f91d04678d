/*
 * The recovery codes page's "Print" button: wired here, the page carries no inline script
 * (strict CSP). Hidden without this script. The print stylesheet (idp.css, @media print)
 * keeps only the codes and their explanation on paper.
 */
(function () {
  "use strict";
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      window.print();
    });
  });
})();
