// The page's few lines of behaviour. Everything else is htmx and the server.
(function () {
  "use strict";
  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var composer = function () { return $("#composer-input"); };
  var ENDED = { 4401: "signed_out", 4403: "deactivated", 4404: "gone", 4429: "too_many" };
  var INFO_NOTICE_MS = 6000;
  var RECONNECT_GIVE_UP_MS = 30000;

  // Reconnect quickly at first, then back off to at most ten seconds between tries.
  if (window.htmx) {
    htmx.config.wsReconnectDelay = function (retryCount) {
      return Math.min(1000 * Math.pow(2, retryCount), 10000) * (0.5 + Math.random() / 2);
    };
  }

  // The page follows a streaming reply only while the reader is at the bottom.
  // Scrolling up (mouse, keys or touch) stops following and offers "Jump to latest".
  function nearBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 80; }
  function setFollowing(thread, on) {
    thread.dataset.stick = on ? "yes" : "no";
    var jump = $("#jump-latest");
    if (jump) jump.hidden = on;
  }
  function scrollThread(force) {
    var thread = $("#thread");
    if (!thread) return;
    if (force) setFollowing(thread, true);
    if (thread.dataset.stick !== "no") {
      thread.scrollTo({ top: thread.scrollHeight, behavior: "instant" });
      thread.dataset.lastTop = thread.scrollTop;
    }
  }
  function onThreadScroll(thread) {
    var last = Number(thread.dataset.lastTop || 0);
    if (nearBottom(thread)) setFollowing(thread, true);
    else if (thread.scrollTop < last - 2) setFollowing(thread, false);
    thread.dataset.lastTop = thread.scrollTop;
  }

  function copyText(text, button) {
    navigator.clipboard.writeText(text).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1200);
    });
  }

  // Copy buttons on complete code blocks (not in a streaming reply's growing tail),
  // only inside what was just swapped in.
  function addCodeButtons(root) {
    if (!root || !root.querySelectorAll) return;
    var blocks = Array.prototype.slice.call(root.querySelectorAll(".markdown pre"));
    if (root.matches && root.matches(".markdown pre")) blocks.push(root);
    blocks.forEach(function (pre) {
      if (pre.querySelector(".code-copy") || pre.closest(".live-tail")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn icon code-copy";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      pre.appendChild(button);
    });
  }

  // Notices: errors stay until dismissed; information fades on its own timer.
  function armNotices() {
    document.querySelectorAll("#notices .notice.info:not([data-armed])").forEach(function (notice) {
      notice.dataset.armed = "1";
      setTimeout(function () { notice.remove(); }, INFO_NOTICE_MS);
    });
  }

  // The composer keeps its text until the server shows the message in the thread:
  // a refused send (quota, length, a model that is gone) loses nothing.
  var sentText = null;
  function clearComposerIfShown() {
    if (sentText === null || !composer()) return;
    var mine = document.querySelectorAll("#thread article.msg.user .user-text");
    var last = mine.length ? mine[mine.length - 1].textContent : null;
    if (last !== null && last === sentText.trim()) {
      if (composer().value === sentText) composer().value = "";
      sentText = null;
    }
  }

  // The live connection: say when it drops, when it is back, and when it has ended.
  var live = { lostAt: null, timer: null };
  function connectionBanner(state, html) {
    var banner = $("#connection");
    if (!banner) return;
    document.body.dataset.live = state;
    banner.className = "connection " + state;
    banner.hidden = state === "open";
    if (html !== undefined) banner.innerHTML = html;
  }
  function onLost(code) {
    var reason = ENDED[code];
    clearTimeout(live.timer);
    if (reason) {
      var reload = reason === "gone" || reason === "too_many";
      connectionBanner("ended", reload
        ? 'This page is no longer live. <a href="">Reload</a>'
        : 'Your session has ended. <a href="/accounts/login/?next=' +
          encodeURIComponent(location.pathname) + '">Sign in again</a>');
      return;
    }
    if (live.lostAt === null) live.lostAt = Date.now();
    connectionBanner("reconnecting", "Reconnecting…");
    live.timer = setTimeout(function () {
      connectionBanner("failed",
        'Could not reconnect. Check your connection; this page keeps trying. <a href="">Reload</a>');
    }, Math.max(0, RECONNECT_GIVE_UP_MS - (Date.now() - live.lostAt)));
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
    if (target.closest(".notice-close")) target.closest(".notice").remove();
    if (target.hasAttribute("data-dismiss-confirm")) target.closest(".confirm-slot").innerHTML = "";
    if (target.id === "jump-latest") {
      scrollThread(true);
      if (composer()) composer().focus();
    }
  });

  // A thinking block the reader opened stays open when the reply's frames replace it.
  var openThoughts = {};
  document.addEventListener("toggle", function (event) {
    var details = event.target;
    if (details.matches && details.matches("details.thinking")) openThoughts[details.id] = details.open;
  }, true);
  function reopenThoughts() {
    Object.keys(openThoughts).forEach(function (id) {
      var details = document.getElementById(id);
      if (openThoughts[id] && details && !details.open) details.open = true;
    });
  }

  // One menu open at a time, so Settings and Export never overlap.
  document.addEventListener("toggle", function (event) {
    var opened = event.target;
    if (!opened.matches || !opened.matches("details.menu") || !opened.open) return;
    document.querySelectorAll("details.menu[open]").forEach(function (other) {
      if (other !== opened) other.open = false;
    });
  }, true);

  // After another branch is drawn, keep the version just chosen in view, and give
  // the keyboard back the "‹" or "›" it pressed (or the other one, at the end).
  var versionKey = null;
  document.addEventListener("htmx:wsBeforeSend", function (event) {
    var active = document.activeElement;
    versionKey = active && active.closest && active.closest(".versions")
      ? (active.classList.contains("version-prev") ? "version-prev" : "version-next") : null;
  });
  function keepBranchInView() {
    var marker = $("#thread-focus");
    if (!marker) return false;
    var article = document.getElementById(marker.dataset.focus);
    marker.remove();
    if (!article) return false;
    article.scrollIntoView({ block: "nearest" });
    var thread = $("#thread");
    if (thread) setFollowing(thread, nearBottom(thread));
    if (versionKey) {
      var other = versionKey === "version-prev" ? "version-next" : "version-prev";
      var button = article.querySelector("." + versionKey + ":not([disabled])") ||
        article.querySelector("." + other + ":not([disabled])");
      if (button) button.focus();
      versionKey = null;
    }
    return true;
  }

  function showNotice(text) {
    var notices = $("#notices");
    if (!notices) return;
    var notice = document.createElement("div");
    notice.className = "notice error";
    notice.setAttribute("role", "alert");
    notice.textContent = text;
    notices.appendChild(notice);
  }

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
      document.querySelectorAll("details.menu[open]").forEach(function (menu) { menu.open = false; });
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
      thread.addEventListener("scroll", function () { onThreadScroll(thread); });
      scrollThread(true);
    }
    addCodeButtons(document.body);
    armNotices();
    if (composer()) composer().focus();
  });

  // On every (re)connect, tell the server what this page shows, so that it can
  // send what finished or arrived meanwhile.
  document.addEventListener("htmx:wsOpen", function (event) {
    clearTimeout(live.timer);
    live.lostAt = null;
    connectionBanner("open");
    var thread = $("#thread");
    if (!thread) return;
    var ids = function (sel) {
      return Array.prototype.map.call(thread.querySelectorAll(sel), function (a) { return a.id.slice(4); });
    };
    var all = ids("article.msg");
    var sync = { command: "sync", after: all.length ? all[all.length - 1] : 0, streaming: ids('article.msg[data-status="streaming"]') };
    event.detail.socketWrapper.send(JSON.stringify(sync), event.detail.elt);
  });

  document.addEventListener("htmx:wsClose", function (event) {
    var code = event.detail.event ? event.detail.event.code : 1006;
    onLost(code);
    // The extension retries only after abnormal closes; a server going away
    // cleanly (a restart) must be retried too.
    if (!ENDED[code] && [1006, 1011, 1012, 1013].indexOf(code) < 0) {
      setTimeout(function () { event.detail.socketWrapper.reconnect(); }, 1000);
    }
  });

  document.addEventListener("htmx:load", function (event) { addCodeButtons(event.detail.elt); });
  document.addEventListener("htmx:wsAfterMessage", function () {
    armNotices();
    clearComposerIfShown();
    reopenThoughts();
    addCodeButtons(document.getElementById("thread"));
    if (keepBranchInView()) return;
    var thread = $("#thread");
    if (thread && thread.dataset.stick === "no") { var jump = $("#jump-latest"); if (jump) jump.hidden = false; }
    scrollThread(false);
  });
  // A refused button request (branching from a reply still being written) says why.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    showNotice(xhr && xhr.status < 500 && xhr.responseText ? xhr.responseText : "That did not work; try again.");
  });
  document.addEventListener("htmx:afterSwap", armNotices);
  document.addEventListener("htmx:wsAfterSend", function (event) {
    var form = event.detail.elt && event.detail.elt.closest ? event.detail.elt.closest("form") : null;
    if (form && form.id === "composer") { sentText = composer().value; scrollThread(true); }
  });
  document.documentElement.dataset.js = "ready";  // for tests: handlers are attached
})();
