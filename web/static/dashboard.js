// The community dashboard's charts: options come from the page's JSON block (made on the server);
// every chart also has its figures in a table on the page. The page may arrive by a full load or
// by an htmx swap, and ECharts may load after this file: draw once both are there.
(function () {
  function draw(attempt) {
    var block = document.getElementById("dashboard-charts");
    if (!block) { return; }
    if (typeof echarts === "undefined") {
      if ((attempt || 0) < 100) { setTimeout(function () { draw((attempt || 0) + 1); }, 50); }
      return;
    }
    var options = JSON.parse(block.textContent);
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var option = options[element.getAttribute("data-chart")];
      if (!option) { return; }
      // On a phone's width the category names of a vertical bar chart would overlap: slant them.
      if (element.clientWidth < 560 && option.xAxis && option.xAxis.type === "category") {
        option = JSON.parse(JSON.stringify(option));
        option.xAxis.axisLabel = {interval: 0, rotate: 45, fontSize: 11};
      }
      var chart = echarts.getInstanceByDom(element) || echarts.init(element, null, {renderer: "svg"});
      chart.setOption(option, true);
      element.setAttribute("data-drawn", "true");
    });
  }
  if (!window.cocreateDashboard) {
    window.cocreateDashboard = true;
    window.addEventListener("resize", function () {
      document.querySelectorAll("[data-chart]").forEach(function (element) {
        var chart = typeof echarts !== "undefined" && echarts.getInstanceByDom(element);
        if (chart) { chart.resize(); }
      });
    });
    document.addEventListener("htmx:afterSettle", function () { draw(0); });
    document.addEventListener("cocreate:live-updated", function () { draw(0); });  // static/live.js
  }
  draw(0);
})();
