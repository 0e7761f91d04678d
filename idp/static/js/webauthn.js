/*
 * WebAuthn ceremonies wired by data attributes: pages carry no inline script (strict CSP).
 * Plain ES2020, no dependency, no build step.
 *
 * <form method="post" action="/finish-url"
 *       data-webauthn="register|authenticate|passkey"
 *       data-options-url="/…/options" data-finish-url="/…/finish"
 *       data-msg-cancelled="…" data-msg-timeout="…" data-msg-unsupported="…"
 *       data-msg-failed="…" data-msg-already-registered="…">
 *   <input type="hidden" name="csrf_token" value="…">
 *   <input type="hidden" name="credential">
 *   <button type="submit">…</button>
 *   <p data-webauthn-message role="alert" hidden></p>
 * </form>
 *
 * Submit: POST the form fields (minus `credential`) to data-options-url with header X-CSRFToken,
 * expect the options JSON (bare, or under "publicKey"); run the ceremony; put the credential
 * JSON in the hidden input; submit the form normally to data-finish-url (the server answers
 * with a redirect or a page). A form marked "passkey" also starts conditional mediation on load
 * when the page has <input autocomplete="username webauthn">.
 */
(function () {
  "use strict";

  var FALLBACK = {
    cancelled: "Opération annulée ou délai dépassé. Veuillez réessayer.",
    timeout: "Le délai est dépassé. Veuillez réessayer.",
    unsupported: "Ce navigateur ne prend pas en charge les clés d'accès (WebAuthn).",
    failed: "La vérification a échoué. Veuillez réessayer.",
    alreadyRegistered: "Cet authentificateur est déjà enregistré sur votre compte.",
  };

  // ------------------------------------------------------------------ base64url

  function bufferToBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var text = "";
    for (var i = 0; i < bytes.length; i++) {
      text += String.fromCharCode(bytes[i]);
    }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function base64urlToBuffer(value) {
    var b64 = value.replace(/-/g, "+").replace(/_/g, "/");
    b64 += "===".slice((b64.length + 3) % 4);
    var text = atob(b64);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) {
      bytes[i] = text.charCodeAt(i);
    }
    return bytes.buffer;
  }

  // ------------------------------------------------------------------ options and results

  function descriptorsFromJSON(list) {
    return (list || []).map(function (d) {
      return Object.assign({}, d, { id: base64urlToBuffer(d.id) });
    });
  }

  function creationOptionsFromJSON(json) {
    if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
      return PublicKeyCredential.parseCreationOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: base64urlToBuffer(json.challenge),
      user: Object.assign({}, json.user, { id: base64urlToBuffer(json.user.id) }),
      excludeCredentials: descriptorsFromJSON(json.excludeCredentials),
    });
  }

  function requestOptionsFromJSON(json) {
    if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
      return PublicKeyCredential.parseRequestOptionsFromJSON(json);
    }
    return Object.assign({}, json, {
      challenge: base64urlToBuffer(json.challenge),
      allowCredentials: descriptorsFromJSON(json.allowCredentials),
    });
  }

  function credentialToJSON(credential) {
    if (typeof credential.toJSON === "function") {
      return credential.toJSON();
    }
    var r = credential.response;
    var response = { clientDataJSON: bufferToBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = bufferToBase64url(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = bufferToBase64url(r.authenticatorData);
      response.signature = bufferToBase64url(r.signature);
      response.userHandle = r.userHandle ? bufferToBase64url(r.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: bufferToBase64url(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || null,
    };
  }

  // ------------------------------------------------------------------ page plumbing

  function csrfToken(form) {
    var input = form.querySelector('input[name="csrf_token"]');
    return input ? input.value : "";
  }

  function messageElement(form) {
    var el = form.querySelector("[data-webauthn-message]") ||
      document.querySelector("[data-webauthn-message]");
    if (el && !el.hasAttribute("role")) {
      el.setAttribute("role", "alert");
    }
    return el;
  }

  function showMessage(form, key, text) {
    var el = messageElement(form);
    var attr = "msg" + key.charAt(0).toUpperCase() + key.slice(1);
    var message = text || form.dataset[attr] || FALLBACK[key] || FALLBACK.failed;
    if (el) {
      el.textContent = message;
      el.hidden = false;
      el.dataset.webauthnState = key;
    }
  }

  function clearMessage(form) {
    var el = messageElement(form);
    if (el) {
      el.textContent = "";
      el.hidden = true;
      delete el.dataset.webauthnState;
    }
  }

  function setBusy(form, busy) {
    form.querySelectorAll('button, input[type="submit"]').forEach(function (b) {
      b.disabled = busy;
    });
    if (busy) {
      form.setAttribute("aria-busy", "true");
    } else {
      form.removeAttribute("aria-busy");
    }
  }

  async function fetchOptions(form) {
    var fields = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (name !== "credential" && typeof value === "string") {
        fields.append(name, value);
      }
    });
    var response = await fetch(form.dataset.optionsUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(form), Accept: "application/json" },
      body: fields,
    });
    var body = null;
    try {
      body = await response.json();
    } catch (ignored) {
      body = null;
    }
    if (!response.ok || !body) {
      var error = new Error("options request failed");
      error.name = "OptionsError";
      var text = body && (body.message || body.error);
      error.serverMessage = typeof text === "string" ? text : null;
      throw error;
    }
    return body.publicKey || body;
  }

  function submitCredential(form, credential) {
    form.querySelector('input[name="credential"]').value = JSON.stringify(
      credentialToJSON(credential)
    );
    if (form.dataset.finishUrl) {
      form.action = form.dataset.finishUrl;
    }
    form.method = "post";
    // The prototype method bypasses the submit listener and any control named "submit".
    HTMLFormElement.prototype.submit.call(form);
  }

  function reportError(form, error, mode, startedAt, timeoutMs) {
    var name = error && error.name;
    if (name === "AbortError") {
      return;
    }
    if (name === "NotAllowedError") {
      // The browser uses one error for both: tell them apart by the time spent.
      var timedOut = timeoutMs && Date.now() - startedAt >= timeoutMs - 1000;
      showMessage(form, timedOut ? "timeout" : "cancelled");
    } else if (name === "InvalidStateError" && mode === "register") {
      showMessage(form, "alreadyRegistered");
    } else if (name === "OptionsError") {
      showMessage(form, "failed", error.serverMessage);
    } else {
      showMessage(form, "failed");
    }
  }

  // ------------------------------------------------------------------ ceremonies

  var conditional = null; // AbortController of a pending conditional get

  function abortConditional() {
    if (conditional) {
      conditional.abort();
      conditional = null;
    }
  }

  async function runCeremony(form) {
    var mode = form.dataset.webauthn;
    var startedAt = Date.now();
    var timeoutMs = 0;
    clearMessage(form);
    setBusy(form, true);
    abortConditional();
    try {
      var json = await fetchOptions(form);
      timeoutMs = json.timeout || 0;
      var credential;
      startedAt = Date.now();
      if (mode === "register") {
        credential = await navigator.credentials.create({
          publicKey: creationOptionsFromJSON(json),
        });
      } else {
        credential = await navigator.credentials.get({
          publicKey: requestOptionsFromJSON(json),
        });
      }
      if (!credential) {
        throw Object.assign(new Error("no credential"), { name: "NotAllowedError" });
      }
      submitCredential(form, credential);
    } catch (error) {
      reportError(form, error, mode, startedAt, timeoutMs);
      setBusy(form, false);
    }
  }

  async function startConditional(form) {
    if (!document.querySelector('input[autocomplete~="webauthn"]')) {
      return;
    }
    if (typeof PublicKeyCredential.isConditionalMediationAvailable !== "function") {
      return;
    }
    if (!(await PublicKeyCredential.isConditionalMediationAvailable())) {
      return;
    }
    var controller = new AbortController();
    conditional = controller;
    try {
      var json = await fetchOptions(form);
      var credential = await navigator.credentials.get({
        publicKey: requestOptionsFromJSON(json),
        mediation: "conditional",
        signal: controller.signal,
      });
      if (credential && conditional === controller) {
        conditional = null;
        submitCredential(form, credential);
      }
    } catch (error) {
      // Autofill is best effort: a dismissed or aborted request stays silent.
      if (conditional === controller) {
        conditional = null;
      }
    }
  }

  function wire(form) {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      showMessage(form, "unsupported");
      form.querySelectorAll('button, input[type="submit"]').forEach(function (b) {
        b.hidden = true;
      });
      return;
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!form.hasAttribute("aria-busy")) {
        runCeremony(form);
      }
    });
    if (form.dataset.webauthn === "passkey") {
      startConditional(form);
    }
  }

  function init() {
    document.querySelectorAll("form[data-webauthn]").forEach(wire);
  }

  window.IdpWebAuthn = {
    bufferToBase64url: bufferToBase64url,
    base64urlToBuffer: base64urlToBuffer,
    creationOptionsFromJSON: creationOptionsFromJSON,
    requestOptionsFromJSON: requestOptionsFromJSON,
    credentialToJSON: credentialToJSON,
    runCeremony: runCeremony,
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
