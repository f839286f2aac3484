// The page's few lines of behaviour. Everything else is htmx and the server.
(function () {
  "use strict";
  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var composer = function () { return $("#composer-input"); };

  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 120; }
  function scrollThread(force) {
    var thread = $("#thread");
    if (thread && (force || thread.dataset.stick !== "no")) thread.scrollTop = thread.scrollHeight;
  }

  function copyText(text, button) {
    navigator.clipboard.writeText(text).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1200);
    });
  }

  // Copy buttons on every code block, including ones swapped in later.
  function addCodeButtons(root) {
    (root.querySelectorAll ? root : document).querySelectorAll(".markdown pre").forEach(function (pre) {
      if (pre.querySelector(".code-copy")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn icon code-copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      pre.appendChild(button);
    });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.closest("[data-drawer-toggle]")) document.body.classList.toggle("show-drawer");
    if (target.id === "theme-toggle") {
      var dark = document.documentElement.dataset.theme
        ? document.documentElement.dataset.theme === "dark"
        : matchMedia("(prefers-color-scheme: dark)").matches;
      document.documentElement.dataset.theme = dark ? "light" : "dark";
      localStorage.setItem("theme", document.documentElement.dataset.theme);
    }
    if (target.classList.contains("code-copy")) {
      var code = target.parentElement.querySelector("code") || target.parentElement;
      copyText(code.innerText, target);
    }
    if (target.dataset.copy) {
      var body = document.getElementById(target.dataset.copy).querySelector(".msg-body");
      copyText(body.innerText, target);
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.hasAttribute("data-autosubmit")) event.target.form.submit();
  });

  document.addEventListener("keydown", function (event) {
    var mod = event.ctrlKey || event.metaKey;
    if (event.target.id === "composer-input" && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (event.target.value.trim()) event.target.form.requestSubmit();
    } else if (event.key === "Escape") {
      var stop = document.querySelectorAll(".stop-btn");
      if (stop.length) { event.preventDefault(); stop[stop.length - 1].click(); }
      document.body.classList.remove("show-drawer");
    } else if (mod && !event.shiftKey && event.key.toLowerCase() === "k") {
      event.preventDefault();
      document.body.classList.add("show-drawer");
      $("#search").focus();
    } else if (mod && event.shiftKey && event.key.toLowerCase() === "o") {
      event.preventDefault();
      window.location.href = $("#new-chat").href;
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var thread = $("#thread");
    if (thread) {
      thread.addEventListener("scroll", function () { thread.dataset.stick = nearBottom(thread) ? "yes" : "no"; });
      scrollThread(true);
    }
    addCodeButtons(document);
    if (composer()) composer().focus();
  });

  // On every (re)connect, tell the server what this page shows, so that it can
  // send what finished or arrived meanwhile.
  document.addEventListener("htmx:wsOpen", function (event) {
    var thread = $("#thread");
    if (!thread) return;
    var ids = function (sel) {
      return Array.prototype.map.call(thread.querySelectorAll(sel), function (a) { return a.id.slice(4); });
    };
    var all = ids("article.msg");
    var sync = { command: "sync", after: all.length ? all[all.length - 1] : 0, streaming: ids('article.msg[data-status="streaming"]') };
    event.detail.socketWrapper.send(JSON.stringify(sync), event.detail.elt);
  });

  document.addEventListener("htmx:load", function (event) { addCodeButtons(event.detail.elt); });
  document.addEventListener("htmx:wsAfterMessage", function () { addCodeButtons(document); scrollThread(false); });
  document.addEventListener("htmx:wsAfterSend", function (event) {
    var form = event.detail.elt && event.detail.elt.closest ? event.detail.elt.closest("form") : null;
    if (form && form.id === "composer") { composer().value = ""; scrollThread(true); }
  });
  // Notices fade after a while; the newest stays readable.
  setInterval(function () {
    var notices = document.querySelectorAll("#notices .notice");
    if (notices.length) notices[0].remove();
  }, 8000);
  document.documentElement.dataset.js = "ready";  // for tests: handlers are attached
})();
