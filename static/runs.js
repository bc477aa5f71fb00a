/* The run panel while a run or a sweep is on its way (templates/partials/run_progress.html).
 *
 * An element with `data-run-progress="#id"` (the run form, a preset button, the sweep form)
 * sends a fresh `run_id` with each request it makes (its form's hidden field), and while the
 * request is pending the element `#id`, beside the result, shows the time so far (ticking), the
 * stage (asked every 300 ms of its `data-status-url` + run_id, GET /api/runs/{run_id}, which
 * answers {stage, elapsed}; without that attribute, no stages) and a Cancel button. Cancel asks POST /api/runs/{run_id}/cancel; the pending request then answers why it
 * has no result, in the result area. If it has not answered within CANCEL_GRACE_MS (or the
 * server did not know the run yet), the page gives the request up itself (the server cancels a
 * run whose client went away) and says so in the result area (`data-error-target`).
 */
(function () {
  "use strict";

  var POLL_MS = 300;
  var TICK_MS = 100;
  var CANCEL_GRACE_MS = 4000;
  var SHOW_AFTER_MS = 250;
  var STEPS = ["waiting", "tracing", "compiling", "running"];
  var STEP_OF = { starting: "waiting", done: "running" };
  var WORDS = {
    waiting: "Waiting for a free worker.",
    starting: "A worker is starting.",
    tracing: "Tracing: JAX records the operations of the function.",
    compiling: "Compiling: XLA turns the traced operations into a program for this device.",
    running: "Running the compiled program.",
    computing: "Getting ready: the worker loads the module and its input.",
    done: "Done: the result is on its way.",
    cancelled: "Cancelled.",
    cancelling: "Cancelling: stopping the worker.",
    working: "Working: the first run of a function also compiles it.",
  };

  function newRunId() {
    // crypto.randomUUID needs a secure context (https or localhost); a room's server on its
    // local network is plain http, where getRandomValues still works.
    if (window.crypto && typeof window.crypto.randomUUID === "function" && window.isSecureContext) {
      return window.crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return (b + 256).toString(16).slice(1);
      })
      .join("");
  }

  function setStage(run, stage) {
    if (!stage || stage === run.stage) return;
    run.stage = stage;
    if (stage === "computing" && run.reached) return; // between two stages: keep the last one
    var step = STEPS.indexOf(STEP_OF[stage] || stage);
    if (step > 0) run.reached = true;
    if (stage === "computing") step = 0.5; // past waiting, before tracing: loading the module
    run.progress.querySelectorAll("[data-stage]").forEach(function (item) {
      var index = STEPS.indexOf(item.getAttribute("data-stage"));
      item.classList.toggle("is-past", step >= 0 && index < step);
      item.classList.toggle("is-current", index === step);
      if (index === step) item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
    });
    var words = run.progress.querySelector("[data-run-stage-words]");
    if (words) words.textContent = WORDS[stage] || stage.charAt(0).toUpperCase() + stage.slice(1) + ".";
    run.progress.setAttribute("data-stage", stage);
  }

  function tick(run) {
    var elapsed = run.progress.querySelector("[data-run-elapsed]");
    if (elapsed) elapsed.textContent = ((Date.now() - run.started) / 1000).toFixed(1) + " s";
  }

  function poll(run) {
    if (run.ended) return;
    fetch(run.statusUrl, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (response.status === 404 && run.seen) run.over = true; // it ended meanwhile
        return response.ok ? response.json() : null; // else not known yet
      })
      .then(function (state) {
        if (!state) return;
        run.seen = true;
        if (!run.ended && !run.cancelled) setStage(run, state.stage);
      })
      .catch(function () {})
      .then(function () {
        if (!run.ended && !run.over) run.pollTimer = window.setTimeout(poll, POLL_MS, run);
      });
  }

  function start(elt, xhr, id) {
    var progress = document.querySelector(elt.getAttribute("data-run-progress"));
    if (!progress) return;
    var run = { id: id, elt: elt, xhr: xhr, progress: progress, started: Date.now(), stage: null };
    run.where = window.Playground ? window.Playground.errorTarget(elt) : null;
    if (progress._run) progress._run.shown = false; // a newer run takes the display over
    progress._run = run;
    run.shown = true;
    var cancel = progress.querySelector("[data-run-cancel]");
    if (cancel) cancel.removeAttribute("aria-disabled");
    var base = progress.getAttribute("data-status-url"); // absent: no stages, only the time
    run.statusUrl = base ? base + encodeURIComponent(id) : null;
    progress.classList.toggle("no-stages", !base);
    setStage(run, base ? "waiting" : "working");
    tick(run);
    run.tickTimer = window.setInterval(tick, TICK_MS, run);
    if (base) run.pollTimer = window.setTimeout(poll, POLL_MS, run);
    run.showTimer = window.setTimeout(show, SHOW_AFTER_MS, run);
    xhr.addEventListener("loadend", function () {
      finish(run);
    });
  }

  function show(run) {
    // A warm run answers in milliseconds: its progress would only flicker.
    if (run.ended || run.progress._run !== run) return;
    run.progress.hidden = false;
    run.progress.scrollIntoView({ block: "start", behavior: "smooth" }); // the result goes here
    // The button that started it is disabled while it runs, which drops the keyboard focus:
    // give it to Cancel, the one thing to do now (the result takes it when it comes).
    var active = document.activeElement;
    if (!active || active === document.body || active.disabled) {
      var cancel = run.progress.querySelector("[data-run-cancel]");
      if (cancel) cancel.focus({ preventScroll: true });
    }
  }

  function finish(run) {
    run.ended = true;
    window.clearInterval(run.tickTimer);
    window.clearTimeout(run.pollTimer);
    window.clearTimeout(run.graceTimer);
    window.clearTimeout(run.showTimer);
    if (run.progress._run === run) {
      run.progress._run = null;
      run.progress.hidden = true;
    }
    if (run.gaveUp && window.Playground) {
      window.Playground.showProblem(
        run.where,
        "You cancelled this " + (run.progress.getAttribute("data-what") || "run") + ".",
        "The page stopped waiting for it, and the server stops a computation nobody waits for.",
        "Run it again when you are ready, or make it cheaper first: a smaller input, fewer " +
          "layers or fewer transformations."
      );
    }
  }

  function giveUp(run) {
    if (run.ended) return;
    run.gaveUp = true;
    run.xhr.abort();
  }

  function cancel(button) {
    var progress = button.closest(".run-progress");
    var run = progress && progress._run;
    if (!run || run.ended || run.cancelled) return;
    run.cancelled = true;
    button.setAttribute("aria-disabled", "true"); // keeps the keyboard focus, unlike disabled
    setStage(run, "cancelling");
    fetch("/api/runs/" + encodeURIComponent(run.id) + "/cancel", {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (!response.ok) giveUp(run); // the server does not know it (yet): stop waiting
        else run.graceTimer = window.setTimeout(giveUp, CANCEL_GRACE_MS, run);
      })
      .catch(function () {
        giveUp(run);
      });
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-run-progress")) return;
    var id = newRunId();
    event.detail.formData.set("run_id", id);
    var field = elt.tagName === "FORM" ? elt.querySelector("input[name=run_id]") : null;
    if (field) field.value = id; // a preset button sends it with the form it includes
    elt._runId = id;
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (!elt || !elt._runId) return;
    var id = elt._runId;
    elt._runId = null;
    start(elt, event.detail.xhr, id);
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-run-cancel]");
    if (button) cancel(button);
  });
})();
