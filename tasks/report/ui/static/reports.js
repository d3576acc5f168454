// The Compile reports pages: follow Airflow's colour mode, and draw the charts (Vega-Lite specs in the page, drawn by
// the Vega-Embed bundle this app serves, as SVG).
//
// Airflow 3's UI keeps its colour mode with next-themes: the class "dark" or "light" on its <html>, the choice in
// localStorage "theme" ("light", "dark" or "system"). These pages are shown in an iframe of the same origin: the
// parent's class is read first (and watched), then the stored choice, then the browser's prefers-color-scheme.
(function () {
  "use strict";
  var root = document.documentElement;
  var dark = window.matchMedia("(prefers-color-scheme: dark)");

  function parentMode() {
    try {
      if (window.parent === window) return null;
      var classes = window.parent.document.documentElement.classList;
      return classes.contains("dark") ? "dark" : classes.contains("light") ? "light" : null;
    } catch (e) {
      return null; // not the same origin: no say
    }
  }

  function storedMode() {
    try {
      var theme = window.localStorage.getItem("theme");
      return theme === "dark" || theme === "light" ? theme : null;
    } catch (e) {
      return null;
    }
  }

  function mode() {
    return parentMode() || storedMode() || (dark.matches ? "dark" : "light");
  }

  function apply() {
    var now = mode();
    if (root.dataset.theme === now) return;
    root.dataset.theme = now;
    document.dispatchEvent(new CustomEvent("colormode", { detail: now }));
  }

  apply();
  window.addEventListener("storage", function (event) {
    if (event.key === "theme") apply();
  });
  dark.addEventListener("change", apply);
  try {
    if (window.parent !== window) {
      new MutationObserver(apply).observe(window.parent.document.documentElement, {
        attributes: true,
        attributeFilter: ["class"],
      });
    }
  } catch (e) {
    // another origin: the stored choice and prefers-color-scheme decide
  }

  function token(name) {
    return getComputedStyle(root).getPropertyValue(name).trim();
  }

  function themed(spec) {
    var fg = token("--chart-fg"), muted = token("--chart-muted"), grid = token("--chart-grid");
    var domain = token("--chart-domain"), font = token("--font");
    var copy = JSON.parse(JSON.stringify(spec));
    copy.background = null;
    copy.config = Object.assign({}, copy.config, {
      font: font,
      view: { stroke: grid },
      axis: { labelColor: muted, titleColor: fg, gridColor: grid, domainColor: domain, tickColor: domain,
              labelFont: font, titleFont: font, titleFontWeight: 500 },
      legend: { labelColor: fg, titleColor: fg, labelFont: font, titleFont: font, titleFontWeight: 500 },
      title: { color: fg, font: font, fontWeight: 600, anchor: "start" },
      header: { labelColor: fg, titleColor: fg },
    });
    (copy.params || []).forEach(function (param) {
      if (param.name === "ink") param.value = fg;
    });
    return copy;
  }

  var views = {};
  function draw() {
    if (!window.vegaEmbed) return;
    document.querySelectorAll("[data-chart]").forEach(function (element) {
      var source = document.getElementById(element.dataset.chart);
      if (!source) return;
      if (views[element.id]) views[element.id].finalize();
      element.dataset.drawn = "";
      window
        .vegaEmbed(element, themed(JSON.parse(source.textContent)), {
          renderer: "svg",
          actions: false,
          mode: "vega-lite",
          tooltip: { theme: root.dataset.theme === "dark" ? "dark" : "light" },
        })
        .then(function (result) {
          views[element.id] = result.view;
          element.dataset.drawn = root.dataset.theme;
        })
        .catch(function (error) {
          element.textContent = "This chart could not be drawn: " + error;
        });
    });
  }

  // Airflow shows an external view in an iframe sandboxed without allow-top-navigation and allow-popups: a link
  // to Airflow's own pages (target _top) or to MLflow (target _blank) would do nothing there. The frame is of the
  // same origin (allow-same-origin), so such a link is followed from Airflow's page, as if clicked there.
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a[target]") : null;
    var target = link ? link.getAttribute("target") : "";
    if (window.parent === window || (target !== "_top" && target !== "_blank")) return;
    try {
      var page = window.top.document;
      var proxy = page.createElement("a");
      proxy.href = link.href;
      proxy.target = target === "_blank" ? "_blank" : "_self";
      proxy.rel = "noopener";
      page.body.appendChild(proxy);
      proxy.click();
      proxy.remove();
      event.preventDefault();
    } catch (e) {
      // another origin: the browser follows the link itself
    }
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
  document.addEventListener("colormode", function () {
    if (document.readyState !== "loading") draw();
  });
})();
