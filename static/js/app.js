// The page behaviour every template shares, in one static file: the Content-Security-Policy allows no inline
// script or on* attribute, so templates declare what they want with data-* attributes and this file acts on them.
// Listeners sit on the document, so content htmx swaps in later behaves the same as the first page.
// Text from the page (a confirmation message) is only ever passed to confirm() or textContent, never evaluated.
(function () {
  "use strict";

  // A confirmation before a plain form posts: data-confirm on the form, or on the button that submits it.
  // (htmx forms use hx-confirm.) The message is shown as text, whatever it contains.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    if (form.hasAttribute("data-no-submit")) {
      event.preventDefault(); // a form whose buttons act through htmx only (the admin tables' bulk forms)
      return;
    }
    const submitter = event.submitter;
    const message = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // Dismiss buttons (toasts, the cart status line) remove the element they belong to.
  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-dismiss]") : null;
    if (button) {
      const target = button.closest(button.dataset.dismiss);
      if (target) target.remove();
      return;
    }
    // Copy buttons: data-copy names the element whose text goes to the clipboard.
    const copy = event.target instanceof Element ? event.target.closest("[data-copy]") : null;
    if (copy) {
      const source = document.querySelector(copy.dataset.copy);
      if (source && navigator.clipboard) navigator.clipboard.writeText(source.textContent);
    }
  });

  // Open the drawer only when the header's cart link asked for it: a late refresh of its contents (a change
  // made in the drawer, answered after Escape closed it) must not pop it open again.
  document.addEventListener("htmx:afterSwap", (event) => {
    const source = event.detail.requestConfig && event.detail.requestConfig.elt;
    const drawer = source && source.id === "cart-badge" ? document.getElementById("cart-drawer") : null;
    if (drawer && !drawer.open) drawer.showModal();
  });

  // Filter forms leave empty fields out of the URL they push: ?kind=receipt, not ?status=&kind=receipt&q=.
  document.addEventListener("htmx:configRequest", (event) => {
    const form = event.detail.elt;
    if (event.detail.verb !== "get" || !(form instanceof HTMLFormElement) || !form.classList.contains("filters")) return;
    for (const [name, value] of Object.entries(event.detail.parameters)) {
      if (value === "") delete event.detail.parameters[name];
    }
  });

  // Admin tables: a header checkbox selects every row checkbox of its bulk-action form.
  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box instanceof HTMLInputElement && box.dataset.selectAll) {
      document.querySelectorAll(box.dataset.selectAll + " input[name=ids]").forEach((row) => {
        row.checked = box.checked;
      });
    }
    if (box instanceof HTMLSelectElement && box.id === "f-country") syncRegion(box);
  });

  // Address forms: the two region inputs share a name; only the one that matches the country is enabled (and so
  // submitted) and shown.
  function syncRegion(country) {
    const form = country.form || document;
    const ca = country.value === "CA";
    const pairs = [["#region-ca", "#f-region", ca], ["#region-other", "#f-region-other", !ca]];
    for (const [wrapper, input, shown] of pairs) {
      const box = form.querySelector(wrapper);
      const field = form.querySelector(input);
      if (box) box.hidden = !shown;
      if (field) field.disabled = !shown;
    }
  }

  // The refund dialog names the amount about to be refunded: what was typed, or (hx-confirm's own text)
  // everything left when it is empty.
  document.addEventListener("htmx:confirm", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.refundCurrency) return;
    const typed = form.elements.amount ? form.elements.amount.value.trim() : "";
    if (!typed) return;
    event.preventDefault();
    const message = "Refund $" + typed + " " + form.dataset.refundCurrency + " on order " + form.dataset.refundOrder + "?";
    if (window.confirm(message)) event.detail.issueRequest(true);
  });

  // Content arriving (the first page, or a fragment htmx swapped in): bring its region fields in line.
  function settle(root) {
    root.querySelectorAll("select#f-country").forEach(syncRegion);
  }
  document.addEventListener("htmx:load", (event) => {
    if (event.target instanceof Element) settle(event.target.matches("select#f-country") ? event.target.parentElement : event.target);
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", () => settle(document));
  else settle(document);
})();
