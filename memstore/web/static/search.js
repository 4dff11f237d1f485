// Search as you type: fetch /api/recall (or /api/list with no query) and rebuild the result
// list. Memory text is hostile: every string goes in through textContent or an attribute
// set by setAttribute on a fixed name, never through innerHTML.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var results = document.getElementById("results");
  var status = document.getElementById("status");
  var pager = document.getElementById("pager");
  if (!form || !results) return;
  var PAGE = 20;
  var seq = 0;
  var timer = null;
  var waiting = false; // an input is newer than the last request: its answer is still to come

  function idle() {
    if (!waiting) document.body.setAttribute("data-pending", "0");
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function params() {
    var out = new URLSearchParams();
    new FormData(form).forEach(function (value, key) {
      value = String(value).trim();
      if (value !== "") out.append(key, value);
    });
    return out;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function when(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  function firstLine(text, width) {
    var line = String(text || "").trim().split(/\r?\n/)[0] || "";
    return line.length <= width ? line : line.slice(0, width - 1) + "\u2026";
  }
  function chip(cls, label, why) {
    var c = el("span", "chip " + cls, label);
    c.setAttribute("title", why);
    return c;
  }

  function evidence(h) {
    var box = el("div", "evidence");
    box.appendChild(chip("score", "score " + h.score.toFixed(3),
      "fused score = 0.35 \u00d7 keyword strength (bm25 relative to the best match) + 0.65 \u00d7 cosine"));
    if (h.keyword_rank !== null) {
      box.appendChild(chip("kw", "keyword #" + h.keyword_rank + (h.bm25 !== null ? " \u00b7 bm25 " + h.bm25.toFixed(2) : ""),
        "rank in the full-text (bm25) list"));
    } else if (h.bm25 !== null) {
      box.appendChild(chip("kw off", "bm25 " + h.bm25.toFixed(2), "not in the keyword list; its bm25 is known"));
    }
    if (h.vector_rank !== null) {
      box.appendChild(chip("vec", "vector #" + h.vector_rank + (h.similarity !== null ? " \u00b7 cos " + h.similarity.toFixed(3) : ""),
        "rank in the embedding (cosine) list"));
    } else if (h.similarity !== null) {
      box.appendChild(chip("vec off", "cos " + h.similarity.toFixed(3), "not in the vector list; its cosine is known"));
    }
    return box;
  }

  function item(m, rank, isHit) {
    var li = el("li", "item");
    li.setAttribute("data-id", m.id);
    var head = el("div", "head");
    if (rank) head.appendChild(el("span", "rank", rank));
    var open = el("a", "open", m.id);
    open.setAttribute("href", "/memory/" + encodeURIComponent(m.id));
    head.appendChild(open);
    head.appendChild(el("span", "ns", m.namespace));
    var w = el("span", "when", when(m.created_at));
    w.setAttribute("title", m.created_at || "");
    head.appendChild(w);
    if (m.project) head.appendChild(el("span", "proj", m.project + (m.branch ? " @ " + m.branch : "")));
    (m.tags || []).forEach(function (t) {
      var a = el("a", "tag", "#" + t);
      a.setAttribute("href", "/?" + new URLSearchParams({ tag: t }).toString());
      head.appendChild(a);
    });
    if (m.expires_at) head.appendChild(el("span", "flag expiry", "expires " + when(m.expires_at)));
    li.appendChild(head);
    li.appendChild(el("div", "text", firstLine(m.text, 400)));
    if (isHit) li.appendChild(evidence(m));
    return li;
  }

  function show(data, isHit, p) {
    var frag = document.createDocumentFragment();
    var shown = isHit ? data : data.slice(0, PAGE);
    shown.forEach(function (m, i) { frag.appendChild(item(m, isHit ? i + 1 : 0, isHit)); });
    results.replaceChildren(frag);
    if (isHit) {
      status.textContent = data.length ? data.length + " hits (" + (p.get("mode") || "hybrid") + ")" : "no memories found";
      pager.hidden = true;
    } else {
      status.textContent = data.length ? "newest first \u00b7 1\u2013" + shown.length : "no memories";
      pager.replaceChildren();
      if (data.length > PAGE) {
        var next = new URLSearchParams(p);
        next.set("offset", String(PAGE));
        var a = el("a", "", "older \u2192");
        a.id = "older";
        a.setAttribute("href", "/?" + next.toString());
        pager.appendChild(a);
      }
      pager.hidden = false;
    }
  }

  function update() {
    var p = params();
    var q = p.get("q") || "";
    var mine = ++seq;
    var url;
    if (q) {
      url = "/api/recall?" + p.toString();
    } else {
      var lp = new URLSearchParams(p);
      lp.delete("mode");
      lp.set("limit", String(PAGE + 1));
      url = "/api/list?" + lp.toString();
    }
    history.replaceState(null, "", "/" + (p.toString() ? "?" + p.toString() : ""));
    results.setAttribute("aria-busy", "true");
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        if (mine !== seq) return; // a newer keystroke's answer wins
        results.removeAttribute("aria-busy");
        var err = document.getElementById("error");
        if (!res.ok) {
          status.textContent = res.body && res.body.error ? res.body.error : "error";
          status.className = "status error";
          results.replaceChildren();
          idle();
          return;
        }
        if (err) err.remove();
        status.className = "status";
        show(res.body, !!q, p);
        document.body.setAttribute("data-rendered", String(mine));
        idle();
      })
      .catch(function (e) {
        if (mine !== seq) return;
        idle();
        status.textContent = "the server did not answer (" + e + ")";
        status.className = "status error";
      });
  }

  function later() {
    document.body.setAttribute("data-pending", "1"); // until the answer to the latest input is drawn
    waiting = true;
    clearTimeout(timer);
    timer = setTimeout(function () { waiting = false; update(); }, 120);
  }
  form.addEventListener("input", later);
  form.addEventListener("change", later);
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearTimeout(timer);
    waiting = false;
    document.body.setAttribute("data-pending", "1");
    update();
  });
})();
