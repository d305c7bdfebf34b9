// Follows status.json while a payment is processing; reloads once the outcome is known.
(function () {
  var box = document.getElementById("outcome");
  if (!box || box.dataset.outcome !== "processing") return;
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
        if (data && settled(data)) { window.location.reload(); return; }
        if (tries < 120) setTimeout(check, Math.min(delay * tries, 10000));
      })
      .catch(function () { setTimeout(check, 5000); });
  }
  setTimeout(check, delay);
})();
