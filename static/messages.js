// Live preview on /admin/messages: the server renders the draft (the Preview button's
// action) and its previews are swapped in. Without JavaScript the Preview button does it.
(function () {
  "use strict";
  var form = document.querySelector("form[data-live-preview]");
  if (!form || !window.fetch || !window.DOMParser) return;
  var timer = null;
  var latest = 0;

  form.addEventListener("input", function (event) {
    var tag = event.target.tagName;
    if (tag !== "TEXTAREA" && tag !== "INPUT") return;
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  });

  function refresh() {
    var body = new FormData(form);
    body.set("action", "preview");
    var mine = ++latest;
    fetch(form.getAttribute("action") || window.location.href,
          {method: "POST", body: body, credentials: "same-origin"})
      .then(function (response) {
        return response.text().then(function (text) { return {ok: response.ok, text: text}; });
      })
      .then(function (answer) {
        if (mine !== latest || !answer.ok) return;  // an invalid text: Save shows why
        var fresh = new DOMParser().parseFromString(answer.text, "text/html");
        form.querySelectorAll("[data-preview]").forEach(function (element) {
          var match = fresh.querySelector('[data-preview="' + element.dataset.preview + '"]');
          if (match) element.textContent = match.textContent;
        });
      })
      .catch(function () { /* the Preview button still works */ });
  }
})();
