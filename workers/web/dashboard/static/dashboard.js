// The war room's only script: confirmations and the live stream. No framework, no CDN.
"use strict";

(function () {
  // Every form with data-confirm asks first (a native dialog: keyboard and screen-reader
  // friendly). The clicked button's own data-confirm wins over the form's.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var question = (button && button.dataset.confirm) || form.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    // The page is leaving through this form: a live reload now would abort the post.
    window.rapidLeaving = true;
    if (window.rapidStream) { window.rapidStream.close(); }
  });

  var body = document.body;
  var url = body.dataset.stream;
  if (!url || !window.EventSource) {
    return;
  }
  var note = document.getElementById("live-state");
  var list = document.querySelector("ul.blasts");
  // A detail page was rendered at its blast's updated_at: only a newer look may reload it
  // (a look cached from before an action must not bounce the page back and forth).
  var renderedAt = {};
  document.querySelectorAll("[data-updated-at]").forEach(function (el) {
    renderedAt[el.dataset.blast] = {
      at: el.dataset.updatedAt, status: el.querySelector(".badge").textContent.trim()
    };
  });

  function set(key, value) {
    document.querySelectorAll('[data-f="' + CSS.escape(key) + '"]').forEach(function (el) {
      if (el.textContent !== value) { el.textContent = value; }
    });
  }

  function duration(s) {
    if (s === null || s === undefined) { return "—"; }
    s = Math.round(s);
    if (s < 60) { return s + "s"; }
    if (s < 3600) { return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s"; }
    return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }

  function show(blast) {
    var id = blast.blast_id;
    set(id + "|status", blast.status);
    set(id + "|pause", blast.status === "paused" && blast.pause_reason
      ? "paused by " + blast.pause_reason + (blast.pause_detail ? ": " + blast.pause_detail : "")
      : "");
    var card = document.querySelector('[data-blast="' + CSS.escape(id) + '"]');
    if (card) { card.className = card.className.replace(/status-\S+/, "status-" + blast.status); }
    Object.keys(blast.progress).forEach(function (channel) {
      var p = blast.progress[channel];
      var k = id + "|" + channel + "|";
      var bar = document.querySelector('[data-bar="' + CSS.escape(id + "|" + channel) + '"]');
      if (bar) { bar.max = Math.max(p.total, 1); bar.value = p.done; bar.textContent = p.percent + "%"; }
      set(k + "done", p.done.toLocaleString("en-US"));
      set(k + "total", p.total.toLocaleString("en-US"));
      set(k + "percent", String(p.percent));
      set(k + "rate_per_s", String(p.rate_per_s));
      set(k + "avg_rate_per_s", String(p.avg_rate_per_s));
      set(k + "eta", duration(p.eta_s));
      var counts = blast.counts[channel];
      Object.keys(counts).forEach(function (state) {
        set(k + "c." + state, counts[state].toLocaleString("en-US"));
      });
    });
  }

  var source = new EventSource(url);
  window.rapidStream = source;
  source.onopen = function () { note.textContent = "Live"; body.classList.remove("offline"); };
  source.onerror = function () { note.textContent = "Reconnecting…"; body.classList.add("offline"); };
  source.addEventListener("ended", function () { source.close(); note.textContent = "Ended"; });
  source.onmessage = function (event) {
    if (window.rapidLeaving) { return; }
    var data = JSON.parse(event.data);
    if (list) {
      var ids = data.blasts.map(function (b) { return b.blast_id; }).join(" ");
      if (ids !== list.dataset.ids) { window.location.reload(); return; }
    }
    data.blasts.forEach(function (blast) {
      var was = renderedAt[blast.blast_id];
      if (was && blast.updated_at < was.at) { return; }  // older than the page itself
      show(blast);
      // A detail page's buttons depend on the status: reload when it moves.
      if (!list && was && blast.updated_at > was.at && blast.status !== was.status) {
        source.close();
        window.location.reload();
      }
    });
    body.dataset.updated = String(Date.now());
  };
})();
