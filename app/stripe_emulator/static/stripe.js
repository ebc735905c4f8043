/*
 * Stripe.js stand-in served by the offline Stripe emulator at /v3/.
 *
 * Implements the subset of https://js.stripe.com/v3/ the shop uses: Stripe(pk), elements(), the
 * "payment" and "card" elements, elements.submit(), confirmPayment / confirmSetup / confirmCardPayment,
 * retrievePaymentIntent / retrieveSetupIntent and handleNextAction. Fields are plain inputs (no iframe)
 * so browser tests can type into them; all calls go to the emulator's REST API with the publishable key.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var ORIGIN = script && script.src ? new URL(script.src).origin : window.location.origin;
  var counter = 0;

  function encode(params, prefix, out) {
    out = out || [];
    Object.keys(params).forEach(function (key) {
      var value = params[key];
      var name = prefix ? prefix + "[" + key + "]" : key;
      if (value === undefined || value === null) return;
      if (Array.isArray(value)) {
        value.forEach(function (item, index) {
          if (item !== null && typeof item === "object") encode(item, name + "[" + index + "]", out);
          else out.push(encodeURIComponent(name + "[" + index + "]") + "=" + encodeURIComponent(String(item)));
        });
      } else if (typeof value === "object") {
        encode(value, name, out);
      } else {
        out.push(encodeURIComponent(name) + "=" + encodeURIComponent(String(value)));
      }
    });
    return out.join("&");
  }

  function request(key, method, path, params) {
    var url = ORIGIN + path;
    var init = {
      method: method,
      headers: { Authorization: "Bearer " + key, "Content-Type": "application/x-www-form-urlencoded" },
    };
    var body = encode(params || {});
    if (method === "GET") {
      if (body) url += "?" + body;
    } else {
      init.body = body;
    }
    return fetch(url, init).then(
      function (response) {
        return response.json().then(function (json) {
          return response.ok ? { data: json } : { error: json.error || { type: "api_error", message: "Error" } };
        });
      },
      function () {
        return { error: { type: "api_connection_error", message: "Could not reach the Stripe emulator." } };
      }
    );
  }

  function intentIdFromSecret(secret) {
    return String(secret || "").split("_secret_")[0];
  }

  function withQuery(url, params) {
    var target = new URL(url, window.location.href);
    Object.keys(params).forEach(function (k) {
      target.searchParams.set(k, params[k]);
    });
    return target.toString();
  }

  /* ---------------------------------------------------------------- validation (Stripe's wording) */

  function luhn(number) {
    var sum = 0;
    for (var i = 0; i < number.length; i++) {
      var digit = parseInt(number.charAt(number.length - 1 - i), 10);
      if (i % 2 === 1) {
        digit *= 2;
        if (digit > 9) digit -= 9;
      }
      sum += digit;
    }
    return sum % 10 === 0;
  }

  function brandOf(number) {
    if (/^4/.test(number)) return "visa";
    if (/^(5[1-5]|2[2-7])/.test(number)) return "mastercard";
    if (/^3[47]/.test(number)) return "amex";
    if (/^6(011|5)/.test(number)) return "discover";
    return "unknown";
  }

  function validationError(code, message, field) {
    return { type: "validation_error", code: code, message: message, param: field };
  }

  function validateCard(values, requirePostal) {
    var number = values.number.replace(/\D/g, "");
    var expected = brandOf(number) === "amex" ? 15 : 16;
    if (!number || number.length < expected) {
      if (number.length >= 12 && !luhn(number) && number.length >= expected) {
        return validationError("invalid_number", "Your card number is invalid.", "number");
      }
      return validationError("incomplete_number", "Your card number is incomplete.", "number");
    }
    if (!luhn(number)) return validationError("invalid_number", "Your card number is invalid.", "number");
    var expiry = values.expiry.replace(/\s/g, "");
    var match = /^(\d{1,2})\/?(\d{2})$/.exec(expiry);
    if (!match) return validationError("incomplete_expiry", "Your card's expiration date is incomplete.", "expiry");
    var month = parseInt(match[1], 10);
    var year = 2000 + parseInt(match[2], 10);
    if (month < 1 || month > 12) {
      return validationError("invalid_expiry_month", "Your card's expiration date is invalid.", "expiry");
    }
    var now = new Date();
    if (year < now.getFullYear() || (year === now.getFullYear() && month < now.getMonth() + 1)) {
      return validationError("invalid_expiry_year_past", "Your card's expiration year is in the past.", "expiry");
    }
    var cvcLength = brandOf(number) === "amex" ? 4 : 3;
    if (values.cvc.replace(/\D/g, "").length < cvcLength) {
      return validationError("incomplete_cvc", "Your card's security code is incomplete.", "cvc");
    }
    if (requirePostal && !values.postal.trim()) {
      return validationError("incomplete_zip", "Your postal code is incomplete.", "postal_code");
    }
    return null;
  }

  /* ------------------------------------------------------------------------------------ elements */

  function Element(group, type, options) {
    this._group = group;
    this.elementType = type;
    this._options = options || {};
    this._handlers = {};
    this._root = null;
    this._id = "stripe-emulator-" + ++counter;
  }

  Element.prototype.on = function (event, handler) {
    (this._handlers[event] = this._handlers[event] || []).push(handler);
    return this;
  };
  Element.prototype.off = function (event, handler) {
    this._handlers[event] = (this._handlers[event] || []).filter(function (h) {
      return h !== handler;
    });
    return this;
  };
  Element.prototype._emit = function (event, payload) {
    (this._handlers[event] || []).forEach(function (h) {
      h(payload);
    });
  };

  Element.prototype._field = function (name, label, attrs) {
    var wrap = document.createElement("div");
    wrap.className = "stripe-emulator-field";
    var id = this._id + "-" + name;
    var lab = document.createElement("label");
    lab.setAttribute("for", id);
    lab.textContent = label;
    var input = document.createElement("input");
    input.id = id;
    input.name = name;
    input.type = "text";
    Object.keys(attrs).forEach(function (k) {
      input.setAttribute(k, attrs[k]);
    });
    wrap.appendChild(lab);
    wrap.appendChild(input);
    return { wrap: wrap, input: input };
  };

  Element.prototype.mount = function (target) {
    var container = typeof target === "string" ? document.querySelector(target) : target;
    if (!container) throw new Error("Stripe emulator: mount target " + target + " not found.");
    var self = this;
    var root = document.createElement("div");
    root.className = "StripeElement stripe-emulator-element";
    root.setAttribute("data-stripe-emulator", this.elementType);
    var note = document.createElement("p");
    note.className = "stripe-emulator-test-mode";
    note.textContent = "Test mode: use card 4242 4242 4242 4242, any future date and any CVC.";
    root.appendChild(note);
    var fields = {
      number: this._field("number", "Card number", {
        autocomplete: "cc-number", inputmode: "numeric", placeholder: "1234 1234 1234 1234",
      }),
      expiry: this._field("expiry", "Expiration", {
        autocomplete: "cc-exp", inputmode: "numeric", placeholder: "MM / YY",
      }),
      cvc: this._field("cvc", "CVC", { autocomplete: "cc-csc", inputmode: "numeric", placeholder: "CVC" }),
    };
    var hidePostal = this._options.hidePostalCode === true;
    if (!hidePostal) {
      fields.postal = this._field("postal", "Postal code", { autocomplete: "postal-code", placeholder: "12345" });
    }
    Object.keys(fields).forEach(function (k) {
      root.appendChild(fields[k].wrap);
    });
    var error = document.createElement("div");
    error.className = "stripe-emulator-error";
    error.setAttribute("role", "alert");
    // Reserve the line so messages appearing on blur do not shift the page (and swallow clicks).
    error.style.minHeight = "1.5em";
    error.id = this._id + "-error";
    root.appendChild(error);
    this._fields = fields;
    this._error = error;
    this._root = root;
    container.appendChild(root);
    Object.keys(fields).forEach(function (k) {
      var input = fields[k].input;
      input.setAttribute("aria-describedby", error.id);
      input.addEventListener("input", function () {
        self._changed(false);
      });
      input.addEventListener("blur", function () {
        self._changed(true);
        self._emit("blur", { elementType: self.elementType });
      });
      input.addEventListener("focus", function () {
        self._emit("focus", { elementType: self.elementType });
      });
    });
    setTimeout(function () {
      self._emit("ready", { elementType: self.elementType });
    }, 0);
    return this;
  };

  Element.prototype._values = function () {
    var f = this._fields || {};
    function v(k) {
      return f[k] ? f[k].input.value : "";
    }
    return { number: v("number"), expiry: v("expiry"), cvc: v("cvc"), postal: v("postal") };
  };

  Element.prototype._validate = function () {
    if (!this._root) return validationError("incomplete", "The payment element is not mounted.", null);
    return validateCard(this._values(), !!this._fields.postal);
  };

  Element.prototype._changed = function (showErrors) {
    var values = this._values();
    var error = this._validate();
    var empty = !values.number && !values.expiry && !values.cvc && !values.postal;
    var incomplete = error && /^incomplete/.test(error.code);
    var shown = error && (showErrors ? !empty : !incomplete) ? error : null;
    this._error.textContent = shown ? shown.message : "";
    this._emit("change", {
      elementType: this.elementType,
      empty: empty,
      complete: !error,
      error: shown || undefined,
      brand: brandOf(values.number.replace(/\D/g, "")),
      value: this.elementType === "payment" ? { type: "card" } : { postalCode: values.postal },
    });
  };

  Element.prototype._showError = function (error) {
    if (this._error) this._error.textContent = error ? error.message : "";
  };

  Element.prototype._paymentMethodData = function (extra) {
    var values = this._values();
    var match = /^(\d{1,2})\/?(\d{2})$/.exec(values.expiry.replace(/\s/g, "")) || [null, "0", "0"];
    var billing = Object.assign({}, (extra && extra.billing_details) || {});
    if (values.postal) billing.address = Object.assign({}, billing.address || {}, { postal_code: values.postal });
    return {
      type: "card",
      card: {
        number: values.number.replace(/\D/g, ""),
        exp_month: parseInt(match[1], 10),
        exp_year: 2000 + parseInt(match[2], 10),
        cvc: values.cvc.replace(/\D/g, ""),
      },
      billing_details: billing,
    };
  };

  Element.prototype.unmount = function () {
    if (this._root && this._root.parentNode) this._root.parentNode.removeChild(this._root);
    this._root = null;
    return this;
  };
  Element.prototype.destroy = function () {
    this.unmount();
    this._group._elements = this._group._elements.filter(function (e) {
      return e !== this;
    }, this);
  };
  Element.prototype.clear = function () {
    var f = this._fields || {};
    Object.keys(f).forEach(function (k) {
      f[k].input.value = "";
    });
  };
  Element.prototype.focus = function () {
    if (this._fields) this._fields.number.input.focus();
  };
  Element.prototype.blur = function () {
    if (document.activeElement) document.activeElement.blur();
  };
  Element.prototype.update = function (options) {
    Object.assign(this._options, options || {});
  };
  Element.prototype.collapse = function () {};

  function Elements(stripe, options) {
    this._stripe = stripe;
    this._options = options || {};
    this._clientSecret = this._options.clientSecret || null;
    this._elements = [];
  }
  Elements.prototype.create = function (type, options) {
    if (type !== "payment" && type !== "card") {
      throw new Error("Stripe emulator: element type '" + type + "' is not supported (use 'payment' or 'card').");
    }
    var element = new Element(this, type, options);
    this._elements.push(element);
    return element;
  };
  Elements.prototype.getElement = function (type) {
    for (var i = 0; i < this._elements.length; i++) {
      if (this._elements[i].elementType === type) return this._elements[i];
    }
    return null;
  };
  Elements.prototype._cardElement = function () {
    return this.getElement("payment") || this.getElement("card");
  };
  Elements.prototype.submit = function () {
    var element = this._cardElement();
    if (!element) {
      return Promise.resolve({ error: validationError("incomplete", "No payment element is mounted.", null) });
    }
    var error = element._validate();
    element._showError(error);
    return Promise.resolve(error ? { error: error } : {});
  };
  Elements.prototype.update = function (options) {
    Object.assign(this._options, options || {});
    if (options && options.clientSecret) this._clientSecret = options.clientSecret;
  };
  Elements.prototype.fetchUpdates = function () {
    return Promise.resolve({});
  };

  /* -------------------------------------------------------------------------------------- Stripe */

  function StripeInstance(key, options) {
    this._key = key;
    this._options = options || {};
  }

  StripeInstance.prototype.elements = function (options) {
    return new Elements(this, options);
  };

  StripeInstance.prototype._createPaymentMethod = function (element, extra) {
    return request(this._key, "POST", "/v1/payment_methods", element._paymentMethodData(extra));
  };

  StripeInstance.prototype.createPaymentMethod = function (params) {
    var element = params.elements ? params.elements._cardElement() : params.card || params.element;
    var error = element._validate();
    if (error) return Promise.resolve({ error: error });
    return this._createPaymentMethod(element, params.params || params).then(function (res) {
      return res.error ? { error: res.error } : { paymentMethod: res.data };
    });
  };

  // Shared by confirmPayment / confirmSetup: create the PM from the typed card, confirm, follow next actions.
  StripeInstance.prototype._confirm = function (kind, params) {
    var self = this;
    params = params || {};
    var elements = params.elements;
    var confirmParams = params.confirmParams || {};
    var redirect = params.redirect || "always";
    var secret = params.clientSecret || (elements && elements._clientSecret);
    if (!secret) {
      return Promise.resolve({
        error: { type: "invalid_request_error", code: "missing_client_secret", message: "Missing clientSecret." },
      });
    }
    if (redirect === "always" && !confirmParams.return_url) {
      return Promise.resolve({
        error: {
          type: "invalid_request_error",
          code: "missing_return_url",
          message: "stripe." + (kind === "payment_intent" ? "confirmPayment" : "confirmSetup") +
            "(): the `confirmParams.return_url` argument is required unless passing `redirect: 'if_required'`",
        },
      });
    }
    var element = elements ? elements._cardElement() : params.element;
    var pmPromise;
    if (typeof params.payment_method === "string") {
      pmPromise = Promise.resolve({ data: { id: params.payment_method } });
    } else {
      if (!element) {
        return Promise.resolve({ error: validationError("incomplete", "No payment element is mounted.", null) });
      }
      var invalid = element._validate();
      element._showError(invalid);
      if (invalid) return Promise.resolve({ error: invalid });
      pmPromise = self._createPaymentMethod(element, confirmParams.payment_method_data);
    }
    var resource = kind === "payment_intent" ? "payment_intents" : "setup_intents";
    var resultKey = kind === "payment_intent" ? "paymentIntent" : "setupIntent";
    return pmPromise.then(function (pm) {
      if (pm.error) {
        if (element) element._showError(pm.error);
        return { error: pm.error };
      }
      var body = { payment_method: pm.data.id, client_secret: secret };
      if (confirmParams.return_url) body.return_url = confirmParams.return_url;
      if (confirmParams.receipt_email) body.receipt_email = confirmParams.receipt_email;
      if (confirmParams.setup_future_usage) body.setup_future_usage = confirmParams.setup_future_usage;
      return request(self._key, "POST", "/v1/" + resource + "/" + intentIdFromSecret(secret) + "/confirm", body).then(
        function (res) {
          if (res.error) {
            var intent = res.error.payment_intent || res.error.setup_intent;
            var out = { error: res.error };
            if (intent) out[resultKey] = intent;
            return out;
          }
          return self._afterConfirm(res.data, resultKey, secret, confirmParams.return_url, redirect);
        }
      );
    });
  };

  StripeInstance.prototype._afterConfirm = function (intent, resultKey, secret, returnUrl, redirect) {
    if (intent.status === "requires_action" && intent.next_action && intent.next_action.redirect_to_url) {
      // 3-D Secure: the emulator's challenge page redirects back to return_url when done.
      window.location.assign(intent.next_action.redirect_to_url.url);
      return new Promise(function () {});
    }
    var result = {};
    result[resultKey] = intent;
    if (redirect === "if_required" || !returnUrl) return result;
    var query = {};
    var prefix = resultKey === "paymentIntent" ? "payment_intent" : "setup_intent";
    query[prefix] = intent.id;
    query[prefix + "_client_secret"] = secret;
    query.redirect_status = intent.status === "succeeded" || intent.status === "processing" ? intent.status : "failed";
    window.location.assign(withQuery(returnUrl, query));
    return new Promise(function () {});
  };

  StripeInstance.prototype.confirmPayment = function (params) {
    return this._confirm("payment_intent", params);
  };
  StripeInstance.prototype.confirmSetup = function (params) {
    return this._confirm("setup_intent", params);
  };

  // Legacy card-element API: confirmCardPayment(clientSecret, {payment_method: {card: element}}).
  StripeInstance.prototype.confirmCardPayment = function (clientSecret, data, options) {
    data = data || {};
    var pm = data.payment_method;
    var params = {
      clientSecret: clientSecret,
      redirect: "if_required",
      confirmParams: { return_url: data.return_url },
    };
    if (typeof pm === "string") params.payment_method = pm;
    else if (pm && pm.card) {
      params.element = pm.card;
      params.confirmParams.payment_method_data = { billing_details: pm.billing_details };
    }
    void options;
    return this._confirm("payment_intent", params);
  };
  StripeInstance.prototype.confirmCardSetup = function (clientSecret, data) {
    data = data || {};
    var pm = data.payment_method;
    var params = { clientSecret: clientSecret, redirect: "if_required", confirmParams: {} };
    if (typeof pm === "string") params.payment_method = pm;
    else if (pm && pm.card) params.element = pm.card;
    return this._confirm("setup_intent", params);
  };

  StripeInstance.prototype._retrieve = function (resource, resultKey, clientSecret) {
    var path = "/v1/" + resource + "/" + intentIdFromSecret(clientSecret);
    return request(this._key, "GET", path, { client_secret: clientSecret }).then(function (res) {
      if (res.error) return { error: res.error };
      var out = {};
      out[resultKey] = res.data;
      return out;
    });
  };
  StripeInstance.prototype.retrievePaymentIntent = function (clientSecret) {
    return this._retrieve("payment_intents", "paymentIntent", clientSecret);
  };
  StripeInstance.prototype.retrieveSetupIntent = function (clientSecret) {
    return this._retrieve("setup_intents", "setupIntent", clientSecret);
  };
  StripeInstance.prototype.handleNextAction = function (params) {
    var secret = params.clientSecret;
    var isSetup = /^seti_/.test(secret);
    var resultKey = isSetup ? "setupIntent" : "paymentIntent";
    return this._retrieve(isSetup ? "setup_intents" : "payment_intents", resultKey, secret).then(function (res) {
      if (res.error) return res;
      var intent = res[resultKey];
      if (intent.status === "requires_action" && intent.next_action && intent.next_action.redirect_to_url) {
        window.location.assign(intent.next_action.redirect_to_url.url);
        return new Promise(function () {});
      }
      return res;
    });
  };
  StripeInstance.prototype.handleCardAction = function (clientSecret) {
    return this.handleNextAction({ clientSecret: clientSecret });
  };

  function Stripe(key, options) {
    if (!(this instanceof Stripe) && typeof key !== "string") {
      throw new Error("Stripe(): the publishable key must be a string.");
    }
    if (!/^pk_test_/.test(key)) {
      throw new Error("Stripe emulator: only test-mode publishable keys (pk_test_...) are accepted.");
    }
    return new StripeInstance(key, options);
  }
  Stripe.version = 3;
  Stripe.emulator = true;
  window.Stripe = Stripe;
})();
