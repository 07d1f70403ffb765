// The desk's script (the Content-Security-Policy allows this service's own files alone):
// what is still being worked on (a task's self-test, a submission being graded) is followed.
// Each element with `data-follow` names its status address; the answer's text goes in the
// element's status region, and once done the server-rendered part goes in its `.followed`.
(function () {
  "use strict";

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  async function follow(element) {
    var status = element.querySelector('[role="status"]');
    var failures = 0;
    for (;;) {
      var body;
      try {
        var response = await fetch(element.dataset.follow, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        body = await response.json();
        failures = 0;
      } catch (error) {
        failures += 1;
        if (failures > 5) {
          status.textContent = "The service cannot be reached; reload the page to see the state.";
          return;
        }
        await sleep(2000);
        continue;
      }
      status.textContent = body.text;
      if (body.status) {
        status.className = "status status-" + body.status;
      }
      if (body.done) {
        element.querySelector(".followed").innerHTML = body.html;  // rendered, escaped, by the server
        delete element.dataset.follow;
        return;
      }
      await sleep(1000);
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-follow]").forEach(follow);
  });
})();
