/* Pytree Playground: the page's only script (the CSP allows no inline script, no eval).
 *
 * FIGURES: the one convention every part of the app uses to show a plot.
 *
 *   <div class="plot" data-figure="{{ figure|tojson|forceescape }}"></div>
 *
 * or, for a large figure, an empty plot div with a JSON script right after it:
 *
 *   <div class="plot"></div>
 *   <script type="application/json">{{ figure|tojson }}</script>
 *
 * `figure` is {"data": [...], "layout": {...}} as app/plots.py makes them (any plotly figure
 * dict works). Every `.plot` is drawn on page load and after every htmx swap
 * (`htmx:afterSettle`) with Plotly.react, so a fragment that swaps in a new plot div, or
 * changes a div's data-figure, gets its plot redrawn; a div whose figure did not change is left
 * alone. Plots inside closed <details> are drawn when they open. Plots removed by htmx are
 * purged. Optional: `data-plot-config='{"staticPlot": true}'` merges into plotly's config.
 * A figure that cannot be read or drawn shows a message in its div instead.
 * For a screen reader, give the div role="img" and an aria-label (else the title is used).
 *
 * COPY: <button type="button" data-copy="text"> copies the text; data-copy-target="#id"
 * copies that element's text. The Clipboard API where the browser allows it (https or
 * localhost); otherwise the text is selected in a box next to the button, for Ctrl+C.
 *
 * FOCUS: after a swap, the new content's element with `data-focus-on-load`, or the element
 * whose id a `data-focus` attribute names, takes the keyboard focus. Opening another module
 * moves the focus to its title.
 *
 * TREE KEYS: in a `.tree`, ArrowDown/ArrowUp move between visible nodes, ArrowRight opens a
 * node (or moves into it), ArrowLeft closes it (or moves to its parent), Home/End jump.
 *
 * FILL: <button type="button" data-fill="#input-id" data-value="text"> puts the text in that
 * input (the examples of an expression box).
 *
 * LAYERMAP: a link with `data-reveal-node="<id>"` opens every <details> around that tree node,
 * scrolls to it and focuses it.
 *
 * LIVE TRAINING: an element with `data-frames-url` (a training job's progress) follows that
 * server-sent event stream while it is on the page: each `frame` event
 * ({status, pause_requested, stop_requested, step, total, texts: {...}, figures: {...}}) sets the
 * text of its `[data-frame-text=KEY]` elements, its <progress>, and redraws its
 * `[data-frame-figure=KEY]` plots (Plotly.react, as above). When the state changes (paused,
 * stopping, ended) or a figure appears that it has no place for, the element is asked for again
 * with htmx (`hx-trigger="refresh"`); the keyboard focus stays on the control that had it (or
 * the one that took its place: Play for Pause, the form's Train for its Stop). The element's
 * `data-frames` counts the frames drawn.
 *
 * ERRORS: 4xx/5xx answers are swapped where they were asked for (htmx-config in base.html);
 * timeouts and network failures put a message in #alerts, so nothing spins forever. An element
 * (or an ancestor) with `data-error-target="#id"` has them where its answer goes instead, in
 * that element: an error answer that is not its target's whole fragment (a refusal before the
 * panel's own code ran: too large, too many at once, gone), a time-out or a network failure.
 * `Playground.showProblem(element, title, message, hint)` writes such a message there.
 */
(function () {
  "use strict";

  var PLOT_CONFIG = { responsive: true, displaylogo: false, displayModeBar: false };

  // Figures -------------------------------------------------------------------------------

  function figureSource(div) {
    var source = div.getAttribute("data-figure");
    if (source) return source;
    var next = div.nextElementSibling;
    if (next && next.tagName === "SCRIPT" && next.type === "application/json") {
      return next.textContent;
    }
    return null;
  }

  function showPlotProblem(div, message) {
    div.textContent = "";
    var p = document.createElement("p");
    p.className = "plot-problem";
    p.textContent = message;
    div.appendChild(p);
    div.setAttribute("data-plot-problem", "true");
  }

  function isHidden(div) {
    return div.offsetParent === null && getComputedStyle(div).position !== "fixed";
  }

  function drawPlot(div) {
    var source = figureSource(div);
    if (!source) return;
    if (div._plotSource === source && div.classList.contains("js-plotly-plot")) return;
    if (isHidden(div)) return; // drawn when it becomes visible (a <details> opens)
    if (typeof window.Plotly === "undefined") {
      showPlotProblem(div, "The plotting library did not load; reload the page to see this plot.");
      return;
    }
    var figure;
    try {
      figure = JSON.parse(source);
    } catch (error) {
      console.warn("plot: unreadable figure", error);
      showPlotProblem(div, "This plot could not be read.");
      return;
    }
    var config = Object.assign({}, PLOT_CONFIG);
    var extra = div.getAttribute("data-plot-config");
    if (extra) {
      try {
        Object.assign(config, JSON.parse(extra));
      } catch (error) {
        console.warn("plot: unreadable data-plot-config", error);
      }
    }
    var layout = figure.layout || {};
    if (!div.hasAttribute("aria-label") && layout.title) {
      var title = typeof layout.title === "string" ? layout.title : layout.title.text;
      if (title) div.setAttribute("aria-label", "Plot: " + title);
    }
    if (!div.hasAttribute("role")) div.setAttribute("role", "img");
    if (div.hasAttribute("data-plot-problem")) {
      div.textContent = "";
      div.removeAttribute("data-plot-problem");
    }
    div._plotSource = source;
    try {
      var drawn = window.Plotly.react(div, figure.data || [], layout, config);
      if (drawn && typeof drawn.catch === "function") {
        drawn.catch(function (error) {
          console.warn("plot: plotly failed", error);
          div._plotSource = null;
          showPlotProblem(div, "This plot could not be drawn.");
        });
      }
    } catch (error) {
      console.warn("plot: plotly failed", error);
      div._plotSource = null;
      showPlotProblem(div, "This plot could not be drawn.");
    }
  }

  function drawPlots(root) {
    var scope = root && root.querySelectorAll ? root : document;
    if (scope.matches && scope.matches(".plot")) drawPlot(scope);
    scope.querySelectorAll(".plot").forEach(drawPlot);
  }

  function resizePlots(root) {
    if (typeof window.Plotly === "undefined") return;
    root.querySelectorAll(".plot.js-plotly-plot").forEach(function (div) {
      if (!isHidden(div)) window.Plotly.Plots.resize(div);
    });
  }

  function purgePlots(root) {
    if (typeof window.Plotly === "undefined" || !root.querySelectorAll) return;
    var plots = [];
    if (root.matches && root.matches(".plot.js-plotly-plot")) plots.push(root);
    root.querySelectorAll(".plot.js-plotly-plot").forEach(function (div) {
      plots.push(div);
    });
    plots.forEach(function (div) {
      window.Plotly.purge(div);
      div._plotSource = null;
    });
  }

  // Copy ----------------------------------------------------------------------------------

  function announce(message) {
    var live = document.getElementById("live-status");
    if (!live) return;
    live.textContent = "";
    window.setTimeout(function () {
      live.textContent = message;
    }, 30);
  }

  function flash(button, text) {
    if (!button._label) button._label = button.textContent;
    button.textContent = text;
    button.classList.add("is-done");
    window.clearTimeout(button._flashTimer);
    button._flashTimer = window.setTimeout(function () {
      button.textContent = button._label;
      button.classList.remove("is-done");
    }, 1800);
  }

  function selectFallback(button, text) {
    // No clipboard access (a plain-http address): show the text selected, for Ctrl+C.
    var box = button.parentNode.querySelector(".copy-fallback");
    if (!box) {
      box = document.createElement("textarea");
      box.className = "copy-fallback";
      box.readOnly = true;
      box.rows = Math.min(12, text.split("\n").length);
      box.setAttribute("aria-label", "Text to copy: press Ctrl+C (Cmd+C on a Mac)");
      button.insertAdjacentElement("afterend", box);
    }
    box.value = text;
    box.focus();
    box.select();
    var copied = false;
    try {
      copied = document.execCommand("copy");
    } catch (error) {
      copied = false;
    }
    if (copied) {
      flash(button, "Copied");
      announce("Copied " + text.slice(0, 80));
    } else {
      flash(button, "Press Ctrl+C");
      announce("The text is selected: press Ctrl+C to copy it");
    }
  }

  function copyText(button) {
    var text = button.getAttribute("data-copy");
    var target = button.getAttribute("data-copy-target");
    if (target) {
      var element = document.querySelector(target);
      text = element ? element.textContent : null;
    }
    if (text === null || text === undefined) return;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () {
          flash(button, "Copied");
          announce("Copied " + (text.length > 80 ? "the code" : text || "the empty path"));
        },
        function () {
          selectFallback(button, text);
        }
      );
    } else {
      selectFallback(button, text);
    }
  }

  // Tree keys -----------------------------------------------------------------------------

  function visibleSummaries(tree) {
    return Array.prototype.filter.call(tree.querySelectorAll("summary"), function (summary) {
      var details = summary.parentElement;
      var outer = details.parentElement && details.parentElement.closest("details");
      while (outer && tree.contains(outer)) {
        if (!outer.open) return false;
        outer = outer.parentElement && outer.parentElement.closest("details");
      }
      return true;
    });
  }

  function onTreeKey(event) {
    var summary = event.target;
    if (!summary || summary.tagName !== "SUMMARY") return;
    var tree = summary.closest(".tree");
    if (!tree) return;
    var details = summary.parentElement;
    var list, index;
    switch (event.key) {
      case "ArrowDown":
      case "ArrowUp":
        list = visibleSummaries(tree);
        index = list.indexOf(summary) + (event.key === "ArrowDown" ? 1 : -1);
        if (index >= 0 && index < list.length) list[index].focus();
        break;
      case "Home":
        list = visibleSummaries(tree);
        if (list.length) list[0].focus();
        break;
      case "End":
        list = visibleSummaries(tree);
        if (list.length) list[list.length - 1].focus();
        break;
      case "ArrowRight":
        if (!details.open) {
          details.open = true;
        } else {
          var first = details.querySelector(":scope > .node-body > .children > li > details > summary");
          if (first) first.focus();
        }
        break;
      case "ArrowLeft":
        if (details.open) {
          details.open = false;
        } else {
          var parent = details.parentElement && details.parentElement.closest("details");
          if (parent && tree.contains(parent)) parent.querySelector(":scope > summary").focus();
        }
        break;
      default:
        return;
    }
    event.preventDefault();
  }

  function revealNode(id) {
    var node = document.getElementById(id);
    if (!node) return false;
    var details = node.closest("details");
    while (details) {
      details.open = true;
      details = details.parentElement && details.parentElement.closest("details");
    }
    var own = node.querySelector(":scope > details");
    if (own) own.open = true;
    var summary = node.querySelector("summary");
    if (summary) {
      summary.focus({ preventScroll: true });
      summary.scrollIntoView({ block: "center" });
    }
    return true;
  }

  // Focus after swaps ---------------------------------------------------------------------

  function focusAfterSwap(root) {
    if (!root || !root.querySelector) return;
    var holder = root.matches && root.matches("[data-focus]") ? root : root.querySelector("[data-focus]");
    if (holder) {
      var target = document.getElementById(holder.getAttribute("data-focus"));
      holder.removeAttribute("data-focus");
      if (target) {
        target.focus();
        return;
      }
    }
    var marked = root.querySelector("[data-focus-on-load]");
    if (marked) {
      marked.removeAttribute("data-focus-on-load");
      if (marked.tagName === "SUMMARY") {
        // a tree node a search landed on: focus it and bring it to the middle of the screen
        marked.focus({ preventScroll: true });
        marked.scrollIntoView({ block: "center" });
        return;
      }
      var summary = marked.nextElementSibling && marked.nextElementSibling.querySelector("summary");
      (summary || marked).focus();
    }
  }

  // Alerts --------------------------------------------------------------------------------

  function alertMessage(message) {
    var alerts = document.getElementById("alerts");
    if (!alerts) return;
    var box = document.createElement("div");
    box.className = "error";
    var text = document.createElement("p");
    text.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "btn btn-small";
    close.textContent = "Dismiss";
    close.addEventListener("click", function () {
      box.remove();
    });
    box.appendChild(text);
    box.appendChild(close);
    alerts.appendChild(box);
  }

  // Errors where the answer goes -------------------------------------------------------------

  function errorTarget(elt) {
    var holder = elt && elt.closest ? elt.closest("[data-error-target]") : null;
    return holder ? document.querySelector(holder.getAttribute("data-error-target")) : null;
  }

  function problemBox(title, message, hint) {
    var box = document.createElement("div");
    box.className = "run-error";
    box.setAttribute("role", "alert");
    var strong = document.createElement("strong");
    strong.textContent = title;
    box.appendChild(strong);
    box.appendChild(document.createTextNode(" " + message));
    if (hint) {
      var extra = document.createElement("p");
      extra.className = "run-error-hint";
      extra.textContent = hint;
      box.appendChild(extra);
    }
    return box;
  }

  function showProblem(target, title, message, hint) {
    if (!target) return;
    target.replaceChildren(problemBox(title, message, hint));
    target.focus({ preventScroll: true });
    target.scrollIntoView({ block: "nearest" });
  }

  function onErrorAnswer(event) {
    // An error answer for an element with data-error-target: unless it is the whole fragment
    // its target asked for (which holds its own message), it goes in the error target.
    var detail = event.detail;
    var xhr = detail.xhr;
    if (!xhr || xhr.status < 400) return;
    var where = errorTarget(detail.requestConfig ? detail.requestConfig.elt : detail.elt);
    if (!where) return;
    var body = String(detail.serverResponse || "");
    var own = detail.target && detail.target.id;
    if (own && body.indexOf('id="' + own + '"') !== -1) return;
    detail.shouldSwap = true;
    detail.target = where;
    detail.swapOverride = "innerHTML";
    var type = (xhr.getResponseHeader("content-type") || "").toLowerCase();
    if (type.indexOf("text/html") === -1) {
      var box = problemBox(
        xhr.status >= 500 ? "The server is busy or failed." : "This cannot be done.",
        responseMessage(xhr) || "The server could not do it. Try again in a moment."
      );
      detail.serverResponse = box.outerHTML;
    }
    where.setAttribute("data-focus", where.id);
  }

  function responseMessage(xhr) {
    var type = (xhr.getResponseHeader("content-type") || "").toLowerCase();
    if (type.indexOf("application/json") === -1) return null;
    try {
      var body = JSON.parse(xhr.responseText);
      return body.message || (typeof body.detail === "string" ? body.detail : null);
    } catch (error) {
      return null;
    }
  }

  // Live training ---------------------------------------------------------------------------

  // a control that the refreshed fragment may replace by its twin (the form's Stop becomes
  // Train once the job ended: its buttons come along out of band)
  var TWIN_CONTROLS = {
    "train-play": "train-pause",
    "train-pause": "train-play",
    "train-stop-job": "train-start",
  };
  var refocus = null;

  function refresh(element) {
    var active = document.activeElement;
    var mine = active && (element.contains(active) || active.closest("#train-actions"));
    refocus = mine && active.id ? active.id : null;
    element._framesClosed = true;
    if (element._frames) element._frames.close();
    if (window.htmx) window.htmx.trigger(element, "refresh");
  }

  function applyFrame(element, frame) {
    var paused = String(frame.status === "paused" || Boolean(frame.pause_requested));
    if (
      frame.status !== element.getAttribute("data-status") ||
      paused !== element.getAttribute("data-paused") ||
      Boolean(frame.stop_requested) !== element.hasAttribute("data-stopping")
    ) {
      refresh(element);
      return;
    }
    Object.keys(frame.texts || {}).forEach(function (key) {
      element.querySelectorAll('[data-frame-text="' + key + '"]').forEach(function (node) {
        if (node.textContent !== frame.texts[key]) node.textContent = frame.texts[key];
      });
    });
    var bar = element.querySelector("progress");
    if (bar) {
      bar.max = frame.total;
      bar.value = frame.step;
      bar.textContent = frame.percent + "%";
    }
    var missing = false;
    Object.keys(frame.figures || {}).forEach(function (key) {
      var div = element.querySelector('[data-frame-figure="' + key + '"]');
      if (!div) {
        missing = true;
        return;
      }
      div.setAttribute("data-figure", JSON.stringify(frame.figures[key]));
      drawFrameFigure(div);
    });
    element.setAttribute("data-frames", String(Number(element.getAttribute("data-frames") || 0) + 1));
    if (missing) refresh(element);
  }

  // Frames come every 0.15 s; a figure is redrawn at most every FIGURE_EVERY_MS (its latest
  // frame then), so that Plotly never keeps a slow machine's page too busy for its controls.
  var FIGURE_EVERY_MS = 500;

  function drawFrameFigure(div) {
    var wait = (div._drawnAt || 0) + FIGURE_EVERY_MS - Date.now();
    if (wait <= 0) {
      div._drawnAt = Date.now();
      drawPlot(div);
    } else if (!div._drawTimer) {
      div._drawTimer = setTimeout(function () {
        div._drawTimer = null;
        div._drawnAt = Date.now();
        if (document.body.contains(div)) drawPlot(div);
      }, wait);
    }
  }

  function followFrames(root) {
    var scope = root && root.querySelectorAll ? root : document;
    scope.querySelectorAll("[data-frames-url]").forEach(function (element) {
      if (element._frames || element._framesClosed || typeof EventSource === "undefined") return;
      var source = new EventSource(element.getAttribute("data-frames-url"));
      element._frames = source;
      var onFrame = function (event) {
        if (!document.body.contains(element)) {
          source.close();
          return;
        }
        try {
          applyFrame(element, JSON.parse(event.data));
        } catch (error) {
          console.warn("training: unreadable frame", error);
        }
      };
      source.addEventListener("frame", onFrame);
      source.addEventListener("end", function (event) {
        source.close();
        onFrame(event);
        if (!element._framesClosed) refresh(element);
      });
      source.addEventListener("timeout", function () {
        source.close();
        refresh(element);
      });
    });
  }

  function restoreFocus() {
    if (!refocus) return;
    var target = document.getElementById(refocus) || document.getElementById(TWIN_CONTROLS[refocus]);
    refocus = null;
    if (target) target.focus({ preventScroll: true });
  }

  // Wiring --------------------------------------------------------------------------------

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy], [data-copy-target]");
    if (button) {
      event.preventDefault();
      copyText(button);
      return;
    }
    var fill = event.target.closest && event.target.closest("[data-fill]");
    if (fill) {
      // an example button: put its text in the input it names
      var input = document.querySelector(fill.getAttribute("data-fill"));
      if (input) {
        input.value = fill.getAttribute("data-value");
        input.focus();
      }
      return;
    }
    var reveal = event.target.closest && event.target.closest("[data-reveal-node]");
    if (reveal && revealNode(reveal.getAttribute("data-reveal-node"))) {
      event.preventDefault();
    }
  });

  document.addEventListener("keydown", onTreeKey);

  // <details> toggles do not bubble: listen in the capture phase.
  document.addEventListener(
    "toggle",
    function (event) {
      var details = event.target;
      if (details.tagName === "DETAILS" && details.open) {
        drawPlots(details);
        resizePlots(details);
      }
    },
    true
  );

  document.addEventListener("htmx:afterSettle", function (event) {
    drawPlots(document);
    focusAfterSwap(document);
    restoreFocus();
    followFrames(document);
    var target = event.detail && event.detail.target;
    if (target && target.id === "app") {
      var title = document.getElementById("module-title");
      if (title) title.focus({ preventScroll: false });
    }
  });

  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    purgePlots(event.detail.elt);
    var elt = event.detail.elt;
    if (elt && elt._frames) {
      elt._framesClosed = true;
      elt._frames.close();
    }
  });

  document.addEventListener("htmx:beforeSwap", onErrorAnswer);

  document.addEventListener("htmx:timeout", function (event) {
    var title = "No answer in time.";
    var message = "The server did not answer within 60 seconds, so the page stopped waiting.";
    var hint = "It may be busy: try again in a moment.";
    var where = errorTarget(event.detail.elt);
    if (where) showProblem(where, title, message, hint);
    else alertMessage(message + " " + hint);
  });

  document.addEventListener("htmx:sendError", function (event) {
    var message = "The server could not be reached.";
    var hint = "Check that it is running (and your network), then try again.";
    var where = errorTarget(event.detail.elt);
    if (where) showProblem(where, "No connection.", message, hint);
    else alertMessage(message + " " + hint);
  });

  document.addEventListener("htmx:responseError", function (event) {
    if (errorTarget(event.detail.elt)) return; // shown where the answer goes
    var message = responseMessage(event.detail.xhr);
    if (message) alertMessage(message); // plain words: no status code
  });

  document.addEventListener("htmx:swapError", function () {
    alertMessage("The page could not show the server's answer. Reload the page and try again.");
  });

  window.addEventListener("load", function () {
    drawPlots(document);
    followFrames(document);
  });
  if (document.readyState !== "loading") drawPlots(document);
  document.addEventListener("DOMContentLoaded", function () {
    drawPlots(document);
  });

  window.Playground = {
    drawPlots: drawPlots,
    revealNode: revealNode,
    alert: alertMessage,
    showProblem: showProblem,
    errorTarget: errorTarget,
  };
})();
