// Renders an rlm-mcp trajectory ({header, totals, events, running}) into an element.
// Every text from the trace goes in through textContent: the trace holds model output and the
// user's documents, never markup. Step bodies and sub-queries are built only when opened, and
// long lists in pages, so a session of thousands of sub-queries opens at once.
var RlmTrace = (function () {
  "use strict";
  var STEP_PAGE = 200, SUB_PAGE = 100;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function secs(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  function num(n) { return (n || 0).toLocaleString("en-US"); }
  function firstLine(text, max) {
    if (typeof text !== "string") return "";
    var line = text.split("\n").find(function (l) { return l.trim(); }) || "";
    return line.length > max ? line.slice(0, max) + "…" : line;
  }
  function toolClass(type) {
    return ["exec_python", "answer_sub_queries", "sub_query", "rlm_solve", "load_context"].indexOf(type) >= 0
      ? "t-" + type : "t-other";
  }
  function pre(parent, label, text) {
    if (text === null || text === undefined || text === "") return;
    parent.appendChild(el("div", "label", label));
    parent.appendChild(el("pre", null, typeof text === "string" ? text : JSON.stringify(text, null, 2)));
  }
  function pager(parent, items, size, build) {
    var shown = 0;
    var button = el("button", "more");
    function more() {
      var end = Math.min(items.length, shown + size);
      var frag = document.createDocumentFragment();
      for (; shown < end; shown++) frag.appendChild(build(items[shown], shown));
      parent.insertBefore(frag, button);
      if (shown >= items.length) button.remove();
      else button.textContent = "Show " + Math.min(size, items.length - shown) + " more (" +
        num(items.length - shown) + " left)";
    }
    button.addEventListener("click", more);
    parent.appendChild(button);
    more();
  }
  function lazy(details, build) {
    var built = false;
    function go() { if (details.open && !built) { built = true; build(); } }
    details.addEventListener("toggle", go);
    return go;
  }

  function subQuery(sq, i) {
    var d = el("details", "sq");
    var s = el("summary");
    s.appendChild(el("span", "num", "#" + (i + 1) + " "));
    s.appendChild(el("span", "tool", sq.backend || "?"));
    s.appendChild(el("span", "dur", " " + secs(sq.seconds)));
    var tok = sq.tokens || {};
    if (tok.prompt !== null && tok.prompt !== undefined)
      s.appendChild(el("span", "dur", " · " + num((tok.prompt || 0) + (tok.answer || 0)) + " tokens"));
    if (sq.error) s.appendChild(el("span", "badge error", "error"));
    s.appendChild(el("span", "hint", firstLine(sq.prompt, 120)));
    d.appendChild(s);
    lazy(d, function () {
      var b = el("div", "body");
      pre(b, "prompt (" + num(sq.prompt_chars) + " chars)", sq.prompt);
      pre(b, "answer (" + num(sq.answer_chars) + " chars)", sq.answer);
      pre(b, "error", sq.error);
      d.appendChild(b);
    });
    return d;
  }

  function subQueries(parent, subs, notKept, open) {
    if (!subs || !subs.length) return;
    var d = el("details", "subs");
    var label = "Sub-queries (" + num(subs.length + (notKept || 0)) + ")";
    if (notKept) label += " — " + num(notKept) + " not kept in the trace";
    d.appendChild(el("summary", null, label));
    var go = lazy(d, function () { var box = el("div"); d.appendChild(box); pager(box, subs, SUB_PAGE, subQuery); });
    parent.appendChild(d);
    if (open) { d.open = true; go(); }
  }

  function stepBody(ev, b, openSubs) {
    var args = ev.arguments || {};
    var rest = {};
    Object.keys(args).forEach(function (k) { if (k !== "code") rest[k] = args[k]; });
    if (args.code !== undefined) pre(b, "code", args.code);
    if (Object.keys(rest).length) pre(b, "arguments", rest);
    if (ev.error) pre(b, "error", ev.error);
    var r = ev.result;
    if (r && typeof r === "object" && !Array.isArray(r)) {
      if ("status" in r || "stdout" in r) {
        pre(b, "output", r.stdout);
        pre(b, "error", r.error);
        if (r.pending && r.pending.length) pre(b, "paused on", r.pending.map(function (p) { return p.id + ": " + p.prompt; }).join("\n\n"));
        if (r.variables && Object.keys(r.variables).length) pre(b, "variables", r.variables);
        pre(b, "final answer", r.final);
      } else {
        pre(b, "result", r);
      }
    }
    (ev.steps || []).forEach(function (st, i) {
      var sd = el("details", "step");
      var ss = el("summary");
      ss.appendChild(el("span", "num", "root iteration " + st.iteration + " "));
      ss.appendChild(el("span", "dur", secs(st.seconds)));
      if (st.error) ss.appendChild(el("span", "badge error", "error"));
      ss.appendChild(el("span", "hint", firstLine(st.code || st.response, 100)));
      sd.appendChild(ss);
      lazy(sd, function () {
        var sb = el("div", "body");
        pre(sb, "root model's reply", st.response);
        pre(sb, "code", st.code);
        pre(sb, "output", st.stdout);
        pre(sb, "error", st.error);
        pre(sb, "final answer", st.final);
        subQueries(sb, (ev.sub_queries || []).filter(function (q) { return q.step === i; }), 0, false);
        sd.appendChild(sb);
      });
      b.appendChild(sd);
    });
    subQueries(b, ev.sub_queries, ev.sub_queries_not_kept, openSubs);
  }

  function stepRow(ev, t0, openTarget) {
    var d = el("details", "step");
    d.id = "step-" + (ev.call !== undefined ? ev.call : "x");
    var s = el("summary");
    s.appendChild(el("span", "num", (ev.call !== undefined ? "#" + ev.call : "·") + " "));
    if (ev.ts && t0) s.appendChild(el("span", "when", "+" + secs(ev.ts - t0) + " "));
    s.appendChild(el("span", "tool", ev.type));
    s.appendChild(el("span", "dur", " " + secs(ev.seconds)));
    var r = ev.result || {};
    if (ev.running) s.appendChild(el("span", "badge running", "running"));
    else if (ev.error || r.status === "error") s.appendChild(el("span", "badge error", "error"));
    else if (r.status) s.appendChild(el("span", "badge " + (r.status === "ok" ? "ok" : ""), r.status));
    var n = (ev.sub_queries ? ev.sub_queries.length : 0) + (ev.sub_queries_not_kept || 0);
    if (ev.sub_queries_so_far) n = ev.sub_queries_so_far;
    var tokens = 0;
    (ev.sub_queries || []).forEach(function (q) { var t = q.tokens || {}; tokens += (t.prompt || 0) + (t.answer || 0); });
    if (n) s.appendChild(el("span", "badge", num(n) + " sub-queries" + (tokens ? " · " + num(tokens) + " tokens" : "")));
    if (r.final !== undefined && r.final !== null) s.appendChild(el("span", "badge ok", "FINAL"));
    var args = ev.arguments || {};
    s.appendChild(el("span", "hint", firstLine(args.code || args.question || args.prompt || args.pattern ||
      args.path || args.glob || args.url || args.text || args.name || ev.reason || "", 100)));
    d.appendChild(s);
    var go = lazy(d, function () { var b = el("div", "body"); stepBody(ev, b, openTarget); d.appendChild(b); });
    if (openTarget) { d.open = true; go(); }
    return d;
  }

  // Open call N's step (building pages of steps until it exists) and scroll to it.
  function reveal(list, call) {
    var step = document.getElementById("step-" + call), more;
    while (!step && (more = list.querySelector(":scope > button.more"))) {
      more.click();
      step = document.getElementById("step-" + call);
    }
    if (!step) return;
    step.open = true;
    step.scrollIntoView({ block: "start" });
  }

  function tile(parent, value, label) {
    var t = el("div", "tile");
    t.appendChild(el("b", null, value));
    t.appendChild(el("span", null, label));
    parent.appendChild(t);
  }

  function render(root, data, options) {
    options = options || {};
    root.textContent = "";
    var header = data.header || {}, events = data.events || [], running = data.running || [];
    var totals = data.totals || {};
    var main = el("main");
    main.appendChild(el("h1", null, options.title || "rlm-mcp trajectory"));
    // The backend is chosen per call: name the one sub-queries went to, else the configured one.
    var backend = header.backend || {}, settings = header.settings || {}, used = null;
    events.some(function (e) { used = e.sub_queries && e.sub_queries.length ? e.sub_queries[0].backend : null; return used; });
    var mode = (used || backend.mode || settings.sub_llm || "?") + (settings.llm_model ? " (" + settings.llm_model + ")" : "");
    main.appendChild(el("div", "meta", "session " + (header.session || "?") + " · rlm-mcp " + (header.version || "?") +
      " · started " + (header.started || "?") + " · sub-LLM " + mode));

    var calls = events.filter(function (e) { return e.call !== undefined; });
    var t0 = header.ts || (events[0] && events[0].ts) || 0;
    var tEnd = t0;
    events.concat(running).forEach(function (e) { if (e.ts) tEnd = Math.max(tEnd, e.ts + (e.seconds || 0)); });
    var box = el("div", "totals");
    box.id = "totals";
    tile(box, secs(Math.max(tEnd - t0, 0)), "wall time");
    tile(box, secs(totals.seconds), "in tool calls");
    tile(box, num(totals.calls), "tool calls");
    tile(box, num(totals.executions), "executions");
    tile(box, num(totals.sub_queries), "sub-queries");
    tile(box, num(totals.tokens), "sub-query tokens");
    tile(box, secs(totals.sub_query_seconds), "in sub-queries");
    tile(box, num(totals.errors), "errors");
    main.appendChild(box);

    main.appendChild(el("h2", null, "Final answer"));
    var fin = el("div", "final" + (totals.final === null || totals.final === undefined ? " none" : ""));
    fin.id = "final";
    if (totals.final === null || totals.final === undefined) fin.textContent = "No final answer yet.";
    else fin.appendChild(el("pre", null, totals.final));
    main.appendChild(fin);

    main.appendChild(el("h2", null, "Timeline"));
    var line = el("div", "timeline");
    line.id = "timeline";
    var list = el("div");
    list.id = "steps";
    var span = Math.max(tEnd - t0, 0.001);
    calls.concat(running).slice(-2000).forEach(function (e) {
      if (!e.ts) return;
      var bar = el("i", toolClass(e.type));
      bar.style.left = (100 * (e.ts - t0) / span) + "%";
      bar.style.width = Math.max(100 * (e.seconds || 0) / span, 0.2) + "%";
      bar.title = "#" + e.call + " " + e.type + " " + secs(e.seconds);
      bar.addEventListener("click", function () { reveal(list, e.call); });
      line.appendChild(bar);
    });
    main.appendChild(line);

    main.appendChild(el("h2", null, "Steps (" + num(events.length + running.length) + ")"));
    if (data.events_not_shown > 0)
      main.appendChild(el("div", "meta", num(data.events_not_shown) + " earlier tool calls are not shown here."));
    main.appendChild(list);
    var target = /^#step-(\d+)$/.exec(options.hash || "");
    var openCall = target ? Number(target[1]) : null;
    var items = events.concat(running);
    if (!items.length) list.appendChild(el("div", "empty", "No tool calls recorded yet."));
    var upTo = items.findIndex(function (e) { return e.call === openCall; });
    if (items.length) pager(list, items, Math.max(STEP_PAGE, upTo + 1), function (ev) {
      return stepRow(ev, t0, openCall !== null && ev.call === openCall);
    });
    root.appendChild(main);
  }

  return { render: render };
})();
