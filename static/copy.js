// Copy buttons: shown only when JavaScript and the clipboard are available.
document.querySelectorAll("[data-copy]").forEach(function (button) {
  if (!navigator.clipboard) return;
  var input = document.getElementById(button.dataset.copy);
  var status = document.querySelector(".copy-status");
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(input.value).then(function () {
      status.textContent = "Copied to the clipboard.";
    }, function () {
      input.select();
      status.textContent = "Press Ctrl+C to copy.";
    });
  });
});
