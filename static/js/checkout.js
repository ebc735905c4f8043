// Mounts Stripe's Payment Element and confirms the intent behind its client secret: an order's or a first
// invoice's PaymentIntent, or (data-mode="setup") a SetupIntent that saves a new card.
// Works the same with js.stripe.com and the offline emulator's stand-in: only the script URL differs.
(function () {
  "use strict";
  const form = document.getElementById("payment-form");
  if (!form) return;
  const errors = document.getElementById("payment-errors");
  const button = form.querySelector("button[type=submit]");
  const spinner = button.querySelector(".spinner");

  function showError(message) {
    errors.textContent = message;
    errors.hidden = false;
    errors.focus && errors.setAttribute("tabindex", "-1");
  }
  function busy(on) {
    button.disabled = on;
    button.setAttribute("aria-busy", on ? "true" : "false");
    spinner.hidden = !on;
  }

  if (typeof window.Stripe !== "function") {
    showError("The payment form could not load. Check your connection and reload the page.");
    return;
  }
  const stripe = window.Stripe(form.dataset.publishableKey);
  const elements = stripe.elements({ clientSecret: form.dataset.clientSecret, appearance: { theme: "stripe" } });
  const paymentElement = elements.create("payment");
  paymentElement.on("ready", function () {
    document.getElementById("payment-loading").hidden = true;
    busy(false);
  });
  paymentElement.mount("#payment-element");

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (button.disabled) return; // a double click confirms once
    busy(true);
    errors.hidden = true;
    const submitted = await elements.submit();
    if (submitted.error) {
      showError(submitted.error.message);
      busy(false);
      return;
    }
    // On success (or 3-D Secure) Stripe navigates to return_url; we only get here with an error to show.
    const confirm = form.dataset.mode === "setup" ? stripe.confirmSetup : stripe.confirmPayment;
    const result = await confirm.call(stripe, { elements: elements, confirmParams: { return_url: form.dataset.returnUrl } });
    if (result.error) {
      showError(result.error.message || "The payment did not go through. Please try again.");
      busy(false);
    }
  });
})();
