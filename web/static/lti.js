// LTI hand-off pages. The deep-linking answer back to the course: its form is sent as soon
// as the page loads (without script, its button sends it). The login's cookie check: a
// browser that keeps a cookie here (inside the course's frame, a third-party one) goes on in
// place; one that refuses it, where the platform offers its storage frame (the LTI
// client-side storage messages), puts the state's proof there first (`lti.put_data`) and
// goes on; the launch that follows reads it back (`lti.get_data`) and posts it with the
// launch's form. Messages go only to the platform's origins and are answered only from
// them; a platform that does not answer in time, or any refusal, leaves the new window.
"use strict";
const STORAGE_TIMEOUT_MS = 3000;

function cookiesKept() {
  const attributes =
    location.protocol === "https:" ? "; SameSite=None; Secure; Partitioned" : "; SameSite=Lax";
  document.cookie = "lti1p3-cookie-check=1; path=/lti; max-age=60" + attributes;
  return document.cookie.includes("lti1p3-cookie-check=1");
}

function refused() {
  document.getElementById("lti-cookies-refused").hidden = false;
}

function storageFrame(name) {
  const parent = window.parent !== window ? window.parent : window.opener;
  if (!parent) return null;
  try {
    return name === "_parent" ? parent : parent.frames[name] || null;
  } catch {
    return null; // no frame of that name, or none we may reach
  }
}

function messageId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// One storage message and its answer: the value it gives back, or an error.
function ask(node, subject, fields) {
  const frame = storageFrame(node.dataset.storageTarget);
  const origins = (node.dataset.storageOrigins || "").split(" ").filter(Boolean);
  return new Promise((resolve, reject) => {
    if (!frame || origins.length === 0) {
      reject(new Error("the course's page has no storage frame"));
      return;
    }
    const id = messageId();
    const timer = setTimeout(() => {
      stop();
      reject(new Error("the course's page did not answer"));
    }, STORAGE_TIMEOUT_MS);
    function stop() {
      clearTimeout(timer);
      window.removeEventListener("message", listen);
    }
    function listen(event) {
      const data = event.data;
      if (!origins.includes(event.origin) || typeof data !== "object" || data === null) return;
      if (data.subject !== subject + ".response" || data.message_id !== id) return;
      if (data.key !== fields.key) return;
      stop();
      if (data.error) reject(new Error(String(data.error.message || data.error.code)));
      else resolve(data.value);
    }
    window.addEventListener("message", listen);
    for (const origin of origins) {
      // delivered only where the frame's origin is this one
      frame.postMessage({ subject, message_id: id, ...fields }, origin);
    }
  });
}

function check(node) {
  if (cookiesKept()) {
    location.replace(node.dataset.next);
  } else if (node.dataset.storageTarget) {
    const fields = { key: node.dataset.storageKey, value: node.dataset.storageValue };
    ask(node, "lti.put_data", fields).then(() => location.replace(node.dataset.next), refused);
  } else {
    refused();
  }
}

function readBack(form) {
  ask(form, "lti.get_data", { key: form.dataset.storageKey })
    .then((value) => {
      if (typeof value !== "string" || value === "") throw new Error("nothing was kept");
      form.elements.namedItem("lti_storage_proof").value = value;
      form.submit();
    })
    .catch(refused);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("lti-auto-submit");
  if (form) form.submit();
  const node = document.getElementById("lti-cookie-check");
  if (node) check(node);
  const launch = document.getElementById("lti-storage-launch");
  if (launch) readBack(launch);
});
