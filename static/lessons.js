/* Lessons: the presenter's keys and room moves, and a participant following the room.
 *
 * Presenter view (main.lesson-present): the arrow keys (and PageUp/PageDown, which clickers
 * send) press Previous/Next. In a room (data-room), Previous/Next first move the room with
 * POST /api/rooms/{room}/step and the presenter key, which the presenter link carries in its
 * #key= fragment (never sent to the server by the browser); it is kept in this browser's
 * localStorage and removed from the address bar, so the projector never shows it.
 *
 * Participant (section.room-banner): an EventSource on /api/rooms/{code}/events; when the
 * room moves, the page follows if "Follow the presenter" is ticked, else it offers a
 * "Catch up" link. The choice is remembered per room.
 *
 * Presenter: "Compile again from scratch" POSTs /api/rooms/{room}/reset-compiled with the key.
 */
(function () {
  "use strict";

  function keyName(room) {
    return "playground-room-key:" + room;
  }

  function presenterKey(room) {
    var match = /^#key=([A-Za-z0-9_-]{1,200})$/.exec(window.location.hash);
    if (match) {
      try { window.localStorage.setItem(keyName(room), match[1]); } catch (e) { /* private mode */ }
      history.replaceState(null, "", window.location.pathname + window.location.search);
      return match[1];
    }
    try { return window.localStorage.getItem(keyName(room)); } catch (e) { return null; }
  }

  function showError(text) {
    var box = document.getElementById("room-move-error");
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }

  /* POST /api/rooms/{room}/{action} with the presenter key; words for a refusal or failure. */
  function presenterPost(room, key, action, body, done, refusedText, failedText) {
    var headers = { "X-Presenter-Key": key || "" };
    if (body !== null) headers["Content-Type"] = "application/json";
    fetch("/api/rooms/" + encodeURIComponent(room) + "/" + action, {
      method: "POST",
      headers: headers,
      body: body === null ? undefined : JSON.stringify(body),
    }).then(function (response) {
      if (response.ok) {
        done();
      } else if (response.status === 403) {
        showError("This browser does not have the room's presenter key, so " + refusedText +
          ". Open the presenter link you got when you started the room.");
      } else {
        showError(failedText);
      }
    }, function () {
      showError("The server could not be reached. Try again.");
    });
  }

  function setUpPresenter(main) {
    var room = main.getAttribute("data-room");
    var key = room ? presenterKey(room) : null;
    var links = main.querySelectorAll(".lesson-nav a[data-step-to]");
    if (room) {
      links.forEach(function (link) {
        link.addEventListener("click", function (event) {
          event.preventDefault();
          var step = Number(link.getAttribute("data-step-to"));
          presenterPost(room, key, "step", { step: step }, function () {
            window.location.assign(link.getAttribute("href") + "?room=" + encodeURIComponent(room));
          }, "the room did not move", "The room could not be moved just now. Try again.");
        });
      });
    }
    var reset = document.getElementById("room-reset-compiled");
    if (room && reset) {
      reset.addEventListener("click", function () {
        presenterPost(room, key, "reset-compiled", null, function () {
          document.getElementById("room-reset-done").textContent =
            "Done: the next run of each function in this room compiles again.";
        }, "nothing was reset", "That did not work just now. Try again.");
      });
    }
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      var target = event.target;
      if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
      var which = null;
      if (event.key === "ArrowRight" || event.key === "PageDown") which = ".lesson-next";
      if (event.key === "ArrowLeft" || event.key === "PageUp") which = ".lesson-prev";
      if (!which) return;
      var link = main.querySelector(".lesson-nav a" + which);
      if (link) {
        event.preventDefault();
        link.click();
      }
    });
  }

  function setUpParticipant(banner, main) {
    var code = banner.getAttribute("data-room-code");
    var here = Number(main.getAttribute("data-step"));
    var base = banner.getAttribute("data-lesson-url");
    var follow = document.getElementById("room-follow");
    var catchUp = document.getElementById("room-catch-up");
    var where = banner.querySelector(".room-presenter-step");
    var stored = null;
    try { stored = window.localStorage.getItem("playground-room-follow:" + code); } catch (e) { /* */ }
    follow.checked = stored !== "no";
    follow.addEventListener("change", function () {
      try {
        window.localStorage.setItem("playground-room-follow:" + code, follow.checked ? "yes" : "no");
      } catch (e) { /* private mode */ }
    });
    var last = Number(banner.getAttribute("data-room-step"));
    var source = new EventSource("/api/rooms/" + encodeURIComponent(code) + "/events");
    source.addEventListener("step", function (event) {
      var data = JSON.parse(event.data);
      where.textContent = String(data.step);
      catchUp.href = base + data.step;
      catchUp.textContent = "Catch up: go to step " + data.step;
      catchUp.hidden = data.step === here;
      if (data.step !== last && data.step !== here && follow.checked) {
        source.close();
        window.location.assign(base + data.step);
      }
      last = data.step;
    });
    source.addEventListener("end", function () {
      /* the stream's life is over: EventSource reconnects by itself after "retry" */
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.querySelector("main.lesson");
    if (!main) return;
    if (main.classList.contains("lesson-present")) setUpPresenter(main);
    var banner = document.querySelector(".room-banner[data-room-code]");
    if (banner) setUpParticipant(banner, main);
    document.body.addEventListener("htmx:afterSwap", function (event) {
      if (event.target && event.target.id === "lesson-result") event.target.focus();
    });
  });
})();
