// Posts the gateway's hosted form at once; the visible button covers browsers without JS.
document.querySelectorAll("form[data-autosubmit]").forEach(function (form) { form.submit(); });
