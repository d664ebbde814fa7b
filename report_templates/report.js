/* vmaudit HTML report: filters by status and severity, search by guest or resource.
   Only hides and shows rows the server rendered; it never builds markup from strings (report values are
   tenant-controlled) and only ever sets textContent. Without JS the form stays hidden and all is shown. */
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var search = document.getElementById("search");
  var shown = document.getElementById("shown");
  if (!form || !search || !shown) { return; }
  var checks = Array.prototype.slice.call(document.querySelectorAll("article.check"));
  var total = 0;
  var groups = checks.map(function (article) {
    var rows = Array.prototype.slice.call(article.querySelectorAll("tr.finding"));
    total += rows.length;
    return {
      article: article,
      rows: rows.map(function (tr) {
        return { tr: tr, status: tr.getAttribute("data-status"), severity: tr.getAttribute("data-severity"),
                 resource: (tr.getAttribute("data-resource") || "").toLowerCase(),
                 inPasses: tr.closest("details") };
      }),
      details: article.querySelector("details.passes")
    };
  });

  function checked(name) {
    var out = {};
    Array.prototype.forEach.call(form.querySelectorAll("input[name='" + name + "']"), function (box) {
      if (box.checked) { out[box.value] = true; }
    });
    return out;
  }

  function apply() {
    var statuses = checked("status");
    var severities = checked("severity");
    var query = search.value.trim().toLowerCase();
    var visible = 0;
    groups.forEach(function (g) {
      var inGroup = 0;
      var inPasses = 0;
      g.rows.forEach(function (r) {
        var ok = statuses[r.status] === true && severities[r.severity] === true &&
                 (query === "" || r.resource.indexOf(query) !== -1);
        r.tr.hidden = !ok;
        if (ok) { inGroup += 1; if (r.inPasses) { inPasses += 1; } }
      });
      g.article.hidden = inGroup === 0;
      if (g.details) {
        g.details.hidden = inPasses === 0;
        // a search for one guest should show its passes too, not a closed box
        if (query !== "" && inPasses > 0) { g.details.open = true; }
      }
      visible += inGroup;
    });
    shown.textContent = visible + " of " + total + " findings shown";
  }

  var timer = null;
  form.addEventListener("change", apply);
  search.addEventListener("input", function () {
    if (timer !== null) { clearTimeout(timer); }
    timer = setTimeout(apply, total > 5000 ? 200 : 0);
  });
  form.addEventListener("submit", function (event) { event.preventDefault(); apply(); });

  // printing shows everything: open collapsed passes for the print, restore afterwards
  var reopened = [];
  window.addEventListener("beforeprint", function () {
    reopened = Array.prototype.filter.call(document.querySelectorAll("details"), function (d) { return !d.open; });
    reopened.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    reopened.forEach(function (d) { d.open = false; });
    reopened = [];
  });

  form.hidden = false;
  apply();
}());
