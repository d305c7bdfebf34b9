// Follows status.json while a payment is processing, then reloads; after that reload the
// outcome's heading takes focus so that screen readers announce it.
(function () {
  var box = document.getElementById("outcome");
  if (!box) return;
  var KEY = "portal-announce-outcome";
  if (box.dataset.outcome !== "processing") {
    if (sessionStorage.getItem(KEY)) {
      sessionStorage.removeItem(KEY);
      var heading = box.querySelector("h1");
      if (heading) heading.focus();
    }
    return;
  }
  var delay = 1500, tries = 0;
  function settled(data) {
    if (data.status === "paid" || data.status === "partially_paid") return true;
    var p = data.latest_payment;
    return p && p.reference === box.dataset.reference && p.status !== "pending";
  }
  function check() {
    tries += 1;
    fetch(box.dataset.statusUrl, {headers: {"Accept": "application/json"}, cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data && settled(data)) {
          sessionStorage.setItem(KEY, "1");
          window.location.reload();
          return;
        }
        if (tries < 120) setTimeout(check, Math.min(delay * tries, 10000));
      })
      .catch(function () { setTimeout(check, 5000); });
  }
  setTimeout(check, delay);
})();
