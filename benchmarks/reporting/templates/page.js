(function () {
  function sortBy(th) {
    var row = th.parentNode, table = th.closest("table"), body = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(row.children, th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    Array.prototype.forEach.call(row.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var numeric = th.getAttribute("data-type") === "number";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[idx].getAttribute("data-sort"), y = b.cells[idx].getAttribute("data-sort");
      var xm = x === null || x === "", ym = y === null || y === "";
      if (xm || ym) { return xm === ym ? 0 : (xm ? 1 : -1); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return dir === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("th[data-key]").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") { th.click(); } });
  });
  // Column groups: a checkbox per group shows/hides its cells (body class hide-<group>); `#show=a,b` in the URL
  // picks the visible groups on load. A table wider than its box gets the class "overflows" (and a hint).
  var boxes = document.querySelectorAll("input[data-group]");
  function markOverflow() {
    document.querySelectorAll(".wrap").forEach(function (w) {
      w.classList.toggle("overflows", w.scrollWidth > w.clientWidth + 1);
    });
  }
  function apply() {
    boxes.forEach(function (b) {
      document.body.classList.toggle("hide-" + b.getAttribute("data-group"), !b.checked);
    });
    markOverflow();
  }
  var show = /(?:^#|&)show=([^&]*)/.exec(decodeURIComponent(location.hash));
  if (show) {
    var wanted = show[1].split(",");
    boxes.forEach(function (b) {
      b.checked = wanted.indexOf("all") >= 0 || wanted.indexOf(b.getAttribute("data-group")) >= 0;
    });
  }
  boxes.forEach(function (b) { b.addEventListener("change", apply); });
  window.addEventListener("resize", markOverflow);
  apply();
  var m = /^#sort=([^:]+):([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(location.hash));
  if (m) {
    var table = document.getElementById(m[1]);
    var th = table && table.querySelector('th[data-key="' + CSS.escape(m[2]) + '"]');
    if (th) { th.click(); if (m[3] === "desc") { th.click(); } }
  }
})();
