// The learner's pages' script (no inline script: the Content-Security-Policy allows this
// service's own files alone). Two jobs: Tab indents in a code editor, and a submission being
// graded is followed live (by poll.js's loop), its state told in the page's status region
// and its result put in place when done.
(function () {
  "use strict";

  var INDENT = "    ";

  function editorKeys(event) {
    var area = event.target;
    if (event.key === "Escape") {  // the next Tab leaves the editor, as a keyboard user expects
      area.dataset.leaving = "1";
      return;
    }
    if (event.key !== "Tab" || event.ctrlKey || event.altKey || event.metaKey) {
      return;
    }
    if (area.dataset.leaving === "1") {
      area.dataset.leaving = "";
      return;
    }
    event.preventDefault();
    var start = area.selectionStart;
    var end = area.selectionEnd;
    if (event.shiftKey) {
      var lineStart = area.value.lastIndexOf("\n", start - 1) + 1;
      var line = area.value.slice(lineStart, lineStart + INDENT.length);
      var removed = line.length - line.replace(/^ +/, "").length;
      if (removed > 0) {
        area.setRangeText("", lineStart, lineStart + removed, "preserve");
        area.setSelectionRange(Math.max(lineStart, start - removed), Math.max(lineStart, end - removed));
      }
      return;
    }
    area.setRangeText(INDENT, start, end, "end");
  }

  function follow(status) {
    window.graderPages.poll(status.dataset.poll, function (body) {
      if (body.done) {
        document.getElementById("result").innerHTML = body.html;  // rendered, escaped, by the server
        var cell = document.querySelector('[data-outcome-of="' + body.id + '"]');
        if (cell) {
          cell.textContent = body.text;
        }
        delete status.dataset.poll;
      }
      status.textContent = body.text;
    }, {
      pauseMs: 0,  // each request is a long poll: the server holds it until the state changes
      unreachable: function () {
        status.textContent = "The grader cannot be reached; reload the page to see your result.";
      },
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea[data-editor]").forEach(function (area) {
      area.addEventListener("keydown", editorKeys);
    });
    var status = document.getElementById("live-status");
    if (status && status.dataset.poll) {
      follow(status);
    }
  });
})();
