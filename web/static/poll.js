// The pages' one polling loop, shared by learn.js and teach.js (the Content-Security-Policy
// allows this service's own files alone). `poll(url, update, options)` asks the status
// address until an answer says `done`, handing each answer to `update`; between answers it
// waits `options.pauseMs` (none for a long poll), a failed request is tried again after 2 s,
// and after five failures in a row it stops and calls `options.unreachable`.
(function () {
  "use strict";

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  async function poll(url, update, options) {
    var failures = 0;
    for (;;) {
      var body;
      try {
        var response = await fetch(url, {
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
          options.unreachable();
          return;
        }
        await sleep(2000);
        continue;
      }
      update(body);
      if (body.done) {
        return;
      }
      if (options.pauseMs) {
        await sleep(options.pauseMs);
      }
    }
  }

  window.graderPages = { poll: poll };
})();
