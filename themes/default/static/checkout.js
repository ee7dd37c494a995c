/* The hosted checkout in the payer's browser: the card is tokenised by the channel's own script
   (Stripe.js), so only a payment method id is posted; one submission per click; the processing
   page asks for the outcome until it is known. */
(function () {
  "use strict";

  function sandboxForm(form) {
    var button = form.querySelector("button[type=submit]");
    var sent = false;
    form.addEventListener("submit", function (event) {
      if (sent) { event.preventDefault(); return; }
      sent = true;
      // Disabled once the browser has taken this submission, so that the click itself still submits.
      window.setTimeout(function () { button.disabled = true; }, 0);
    });
  }

  function stripeForm(form) {
    var button = form.querySelector("button[type=submit]");
    var errors = document.getElementById("card-errors");
    var field = form.querySelector("input[name=payment_method]");
    var stripe = window.Stripe(form.dataset.publishableKey);
    var card = stripe.elements().create("card");
    card.mount("#card-element");
    var busy = false;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (busy) return;
      busy = true;
      button.disabled = true;
      errors.textContent = "";
      try {
        var id = null;
        var made = await stripe.createPaymentMethod({ type: "card", card: card });
        if (made && made.error) throw made.error;
        if (made && made.paymentMethod) id = made.paymentMethod.id;
        if (!id) {
          // A Stripe.js without payment methods (localstripe's stand-in): the token's card is one.
          var token = await stripe.createToken(card);
          if (!token || token.error || !token.token) throw (token && token.error) || {};
          id = token.token.card.id;
        }
        field.value = id;
        form.submit();
      } catch (error) {
        errors.textContent = (error && error.message) || form.dataset.cardError;
        busy = false;
        button.disabled = false;
      }
    });
  }

  function poll(section) {
    var statusUrl = section.dataset.statusUrl;
    var pageUrl = section.dataset.pageUrl;
    var wait = 1000;
    function ask() {
      fetch(statusUrl, { cache: "no-store", credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (answer) {
          if (answer && answer.status && answer.status !== "processing") {
            window.location.replace(pageUrl);
            return;
          }
          wait = Math.min(wait * 1.5, 10000);
          window.setTimeout(ask, wait);
        })
        .catch(function () { window.setTimeout(ask, 5000); });
    }
    window.setTimeout(ask, wait);
  }

  var form = document.getElementById("co-form");
  if (form && form.dataset.entry === "stripe") stripeForm(form);
  else if (form) sandboxForm(form);
  var processing = document.getElementById("co-processing");
  if (processing) poll(processing);
})();
