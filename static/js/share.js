// The share panel's "Copy link" button: copies the link of its input, and says so.
(function () {
  "use strict";
  if (window.playgroundShareCopy) return;
  window.playgroundShareCopy = true;
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-share-copy]") : null;
    if (!button) return;
    var input = document.getElementById(button.getAttribute("data-share-copy"));
    if (!input) return;
    var status = document.getElementById(input.getAttribute("aria-describedby"));
    var done = function (text) { if (status) status.textContent = text; };
    input.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        function () { done("Copied."); },
        function () { done("Select the link and copy it with Ctrl+C."); }
      );
    } else {
      try {
        done(document.execCommand("copy") ? "Copied." : "Select the link and copy it with Ctrl+C.");
      } catch (error) {
        done("Select the link and copy it with Ctrl+C.");
      }
    }
  });
})();
