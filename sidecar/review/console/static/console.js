// The review console's progressive enhancement: keyboard shortcuts, live SLA
// countdowns and the time-to-label measurement. Every action also works without
// it (plain forms); nothing here talks to the server but submitting those forms.
(function () {
  "use strict";

  var body = document.body;
  // The server's clock minus ours: countdowns follow the queue's deadlines.
  var skew = parseFloat(body.dataset.now || "0") - Date.now() / 1000;
  var shownAt = performance.now();

  function span(seconds) {
    var s = Math.abs(seconds);
    if (s < 60) return Math.floor(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) {
      var minutes = Math.floor((s % 3600) / 60);
      return Math.floor(s / 3600) + " h " + (minutes < 10 ? "0" : "") + minutes + " min";
    }
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function tick() {
    var now = Date.now() / 1000 + skew;
    document.querySelectorAll("[data-due]").forEach(function (el) {
      var left = parseFloat(el.dataset.due) - now;
      el.textContent = left < 0 ? "overdue by " + span(left) : span(left) + " left";
      el.classList.toggle("late", left < 0);
    });
  }
  tick();
  setInterval(tick, 1000);

  // Time to label: from when this page was shown to when a verdict is submitted.
  document.querySelectorAll("form.verdict").forEach(function (form) {
    form.addEventListener("submit", function () {
      var field = form.querySelector("[name=time_to_label_seconds]");
      if (field) field.value = ((performance.now() - shownAt) / 1000).toFixed(3);
    });
  });

  function byId(id) { return document.getElementById(id); }

  function submit(id) {
    var button = byId(id);
    if (!button || !button.form) return false;
    button.form.requestSubmit(button);
    return true;
  }

  function accept() {
    var rationale = byId("accept-rationale");
    if (rationale && rationale.required && !rationale.value.trim()) {
      rationale.focus();
      return true;
    }
    return submit("accept");
  }

  function pick(select, digit) {
    var option = Array.prototype.find.call(select.options, function (o) {
      return o.value === String(digit) && !o.disabled;
    });
    if (!option) return;
    select.value = option.value;
    var rationale = byId("override-rationale");
    if (rationale) rationale.focus();
  }

  function editing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    if (target && target.id === "override-class") {
      if (/^[0-9]$/.test(event.key)) {
        event.preventDefault();
        pick(target, event.key);
      } else if (event.key === "Enter") {
        event.preventDefault();
        var rationale = byId("override-rationale");
        if (rationale) rationale.focus();
      } else if (event.key === "Escape") {
        target.blur();
      }
      return;
    }
    if (editing(target)) {
      if (event.key === "Escape") target.blur();
      return;
    }
    var handled = false;
    switch (event.key) {
      case "n": handled = submit("claim-next"); break;
      case "a": handled = accept(); break;
      case "s": handled = submit("release"); break;
      case "o":
        var select = byId("override-class");
        if (select) { select.focus(); handled = true; }
        break;
    }
    if (handled) event.preventDefault();
  });
})();
