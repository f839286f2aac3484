// Apply the remembered theme before the first paint; otherwise the CSS follows the system.
(function () {
  var theme = localStorage.getItem("theme");
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
})();
