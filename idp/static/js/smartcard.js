/*
 * CPS card sign-in, wired by data attributes: the page carries no inline script (strict CSP).
 * Plain ES2020, no dependency, no build step.
 *
 * <section data-smartcard data-bridge-url="http://127.0.0.1:47615" data-origin="https://idp…"
 *          data-transaction="…" data-challenge="…" data-status-url="/login/card/status"
 *          data-msg-agent-missing="…" data-msg-no-card="…" …>
 *   <form data-smartcard-pin hidden>             PIN form: its input has NO name and the form
 *     <input id="card-pin" type="password">      is never submitted anywhere: the PIN goes to
 *     <button type="submit">…</button>           the agent on 127.0.0.1 and nowhere else.
 *   </form>
 *   <p data-smartcard-message role="alert" hidden></p>
 *   <form data-smartcard-answer method="post" action="/login/card">   posted to the IdP:
 *     csrf_token, certificate, signature, mechanism (hidden inputs)   the agent's answer only
 *   </form>
 *   <form data-smartcard-complete method="post" action="/login/card/complete">…</form>
 *   <p data-smartcard-progress role="status"></p>
 * </section>
 *
 * Bridge: GET {bridge}/status, then POST {bridge}/sign {origin, transaction, challenge, pin};
 * the answer {certificate, signature, mechanism} goes into the answer form, which is submitted.
 * Terminal mode: the page polls data-status-url and submits the complete form once the agent
 * has confirmed the code.
 */
(function () {
  "use strict";

  var FALLBACK = {
    agentMissing: "L'agent de carte CPS ne répond pas sur cet ordinateur.",
    noCard: "Aucune carte détectée. Insérez votre carte CPS dans le lecteur.",
    failed: "La connexion par carte a échoué. Veuillez réessayer.",
    expired: "Cette demande de connexion a expiré. Rechargez la page.",
  };
  var ERROR_KEYS = {
    pin_incorrect: "pinIncorrect",
    pin_locked: "pinLocked",
    pin_invalid: "pinInvalid",
    no_card: "noCard",
    no_reader: "noReader",
    several_cards: "severalCards",
    no_certificate: "noCertificate",
    card_removed: "cardRemoved",
    certificate_expired: "certificateExpired",
    certificate_not_yet_valid: "certificateNotYetValid",
    module_unavailable: "moduleUnavailable",
    forbidden_origin: "wrongOrigin",
    origin_mismatch: "wrongOrigin",
  };
  var STATUS_TIMEOUT_MS = 5000;
  var SIGN_TIMEOUT_MS = 60000;

  function text(root, key) {
    var attr = "msg" + key.charAt(0).toUpperCase() + key.slice(1);
    return root.dataset[attr] || FALLBACK[key] || FALLBACK.failed;
  }

  function show(root, key, override) {
    var el = root.querySelector("[data-smartcard-message]");
    if (!el) {
      return;
    }
    el.textContent = override || text(root, key);
    el.dataset.smartcardState = key;
    el.hidden = false;
  }

  function clear(root) {
    var el = root.querySelector("[data-smartcard-message]");
    if (el) {
      el.textContent = "";
      el.hidden = true;
      delete el.dataset.smartcardState;
    }
  }

  function setBusy(form, busy) {
    form.querySelectorAll("button, input").forEach(function (el) {
      el.disabled = busy;
    });
    if (busy) {
      form.setAttribute("aria-busy", "true");
    } else {
      form.removeAttribute("aria-busy");
    }
  }

  // ------------------------------------------------------------------ the local bridge

  function BridgeError(key, detail) {
    this.name = "BridgeError";
    this.key = key;
    this.detail = detail || null;
  }

  async function callBridge(root, path, init, timeoutMs) {
    var controller = new AbortController();
    var timer = setTimeout(function () {
      controller.abort();
    }, timeoutMs);
    var response;
    try {
      response = await fetch(
        root.dataset.bridgeUrl + path,
        Object.assign({ mode: "cors", credentials: "omit", cache: "no-store" }, init, {
          signal: controller.signal,
        })
      );
    } catch (error) {
      throw new BridgeError("agentMissing");
    } finally {
      clearTimeout(timer);
    }
    var body = null;
    try {
      body = await response.json();
    } catch (ignored) {
      body = null;
    }
    if (!response.ok || !body) {
      throw new BridgeError(errorKey(body), body);
    }
    return body;
  }

  function errorKey(body) {
    var code = body && body.error;
    if (code === "pin_incorrect") {
      if (body.final_try) {
        return "pinFinalTry";
      }
      return body.count_low ? "pinCountLow" : "pinIncorrect";
    }
    return ERROR_KEYS[code] || "failed";
  }

  function showHolder(root, status) {
    var el = root.querySelector("[data-smartcard-holder]");
    var certificate = status && status.certificate;
    if (!el || !certificate) {
      return;
    }
    var name = [certificate.given_name, certificate.surname].filter(Boolean).join(" ");
    el.textContent = name + (certificate.rpps ? " · RPPS " + certificate.rpps : "");
    el.hidden = false;
  }

  async function checkAgent(root) {
    var status = await callBridge(root, "/status", { method: "GET" }, STATUS_TIMEOUT_MS);
    if (!status.token_present) {
      throw new BridgeError("noCard");
    }
    showHolder(root, status);
    return status;
  }

  async function signWithCard(root, pinForm) {
    var pinInput = pinForm.querySelector('input[type="password"]');
    var answerForm = root.querySelector("form[data-smartcard-answer]");
    clear(root);
    setBusy(pinForm, true);
    var pin = pinInput.value;
    pinInput.value = ""; // the PIN is kept nowhere, not even in the page
    try {
      await checkAgent(root);
      var answer = await callBridge(
        root,
        "/sign",
        {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            origin: root.dataset.origin,
            transaction: root.dataset.transaction,
            challenge: root.dataset.challenge,
            pin: pin,
          }),
        },
        SIGN_TIMEOUT_MS
      );
      pin = "";
      ["certificate", "signature", "mechanism"].forEach(function (name) {
        answerForm.querySelector('input[name="' + name + '"]').value = String(answer[name] || "");
      });
      // The prototype method bypasses submit listeners and any control named "submit".
      HTMLFormElement.prototype.submit.call(answerForm);
    } catch (error) {
      pin = "";
      show(root, error instanceof BridgeError ? error.key : "failed");
      setBusy(pinForm, false);
      pinInput.focus();
    }
  }

  // ------------------------------------------------------------------ terminal mode

  function pollStatus(root) {
    var url = root.dataset.statusUrl;
    var completeForm = root.querySelector("form[data-smartcard-complete]");
    var progress = root.querySelector("[data-smartcard-progress]");
    var interval = parseInt(root.dataset.pollInterval || "2000", 10);
    if (!url || !completeForm) {
      return;
    }
    async function tick() {
      var body = null;
      try {
        var response = await fetch(url, {
          credentials: "same-origin",
          cache: "no-store",
          headers: { Accept: "application/json" },
        });
        body = await response.json();
      } catch (ignored) {
        body = null; // a network hiccup: ask again at the next tick
      }
      var state = body && body.status;
      if (state === "completed") {
        if (progress) {
          progress.textContent = text(root, "confirmed");
        }
        HTMLFormElement.prototype.submit.call(completeForm);
        return;
      }
      if (state === "failed") {
        show(root, "failed", body.message);
        return;
      }
      if (state === "expired" || state === "used") {
        show(root, "expired");
        return;
      }
      setTimeout(tick, interval);
    }
    setTimeout(tick, interval);
  }

  // ------------------------------------------------------------------ wiring

  function wire(root) {
    var pinForm = root.querySelector("form[data-smartcard-pin]");
    if (pinForm) {
      pinForm.hidden = false;
      pinForm.addEventListener("submit", function (event) {
        event.preventDefault();
        if (!pinForm.hasAttribute("aria-busy")) {
          signWithCard(root, pinForm);
        }
      });
      checkAgent(root).catch(function (error) {
        var hint = root.querySelector("[data-smartcard-agent-hint]");
        if (hint && error instanceof BridgeError && error.key === "agentMissing") {
          hint.hidden = false;
        }
      });
    }
    pollStatus(root);
  }

  function init() {
    document.querySelectorAll("[data-smartcard]").forEach(wire);
  }

  window.IdpSmartcard = { errorKey: errorKey };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
