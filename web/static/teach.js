// The desk's script (the Content-Security-Policy allows this service's own files alone):
// what is still being worked on (a task's self-test, a submission being graded) is followed
// by poll.js's loop. Each element with `data-follow` names its status address; the answer's
// text goes in the element's status region, and once done the server-rendered part goes in
// its `.followed`.
(function () {
  "use strict";

  function follow(element) {
    var status = element.querySelector('[role="status"]');
    window.graderPages.poll(element.dataset.follow, function (body) {
      status.textContent = body.text;
      if (body.status) {
        status.className = "status status-" + body.status;
      }
      if (body.done) {
        element.querySelector(".followed").innerHTML = body.html;  // rendered, escaped, by the server
        delete element.dataset.follow;
      }
    }, {
      pauseMs: 1000,
      unreachable: function () {
        status.textContent = "The service cannot be reached; reload the page to see the state.";
      },
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-follow]").forEach(follow);
  });
})();
