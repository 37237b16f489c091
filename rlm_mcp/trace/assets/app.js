// The MCP Apps side (ext-apps, JSON-RPC over postMessage): handshake with the host, render the
// show_trace result the host sends, and refresh it by asking the host to call show_trace again.
(function () {
  "use strict";
  var root = document.getElementById("app");
  var status = document.getElementById("status");
  var nextId = 1, waiting = {}, toolArgs = {};
  function say(text) { status.textContent = text; }
  function request(method, params) {
    var id = nextId++;
    return new Promise(function (resolve, reject) {
      waiting[id] = { resolve: resolve, reject: reject };
      window.parent.postMessage({ jsonrpc: "2.0", id: id, method: method, params: params }, "*");
    });
  }
  function notify(method, params) { window.parent.postMessage({ jsonrpc: "2.0", method: method, params: params || {} }, "*"); }
  function show(result) {
    var data = result && result.structuredContent;
    if (!data || !data.header) {
      var text = result && result.content && result.content[0] && result.content[0].text;
      root.textContent = "";
      var p = document.createElement("pre");
      p.textContent = text || "The tool returned no trajectory.";
      root.appendChild(p);
    } else {
      RlmTrace.render(root, data, { title: "This session's trajectory" });
    }
    say("updated " + new Date().toLocaleTimeString());
    notify("ui/notifications/size-changed", { height: document.documentElement.scrollHeight });
  }
  function refresh() {
    say("refreshing…");
    request("tools/call", { name: "show_trace", arguments: toolArgs }).then(show, function (e) {
      say("refresh failed: " + (e && e.message ? e.message : e));
    });
  }
  window.addEventListener("message", function (event) {
    var msg = event.data;
    if (!msg || msg.jsonrpc !== "2.0") return;
    if (msg.id !== undefined && waiting[msg.id] && (msg.result !== undefined || msg.error !== undefined)) {
      var w = waiting[msg.id];
      delete waiting[msg.id];
      if (msg.error) w.reject(new Error(msg.error.message || "error")); else w.resolve(msg.result);
      return;
    }
    if (msg.method === "ui/notifications/tool-input") toolArgs = (msg.params && msg.params.arguments) || {};
    else if (msg.method === "ui/notifications/tool-result") show(msg.params);
    else if (msg.method === "ui/notifications/tool-cancelled") say("the tool call was cancelled");
    else if (msg.method === "ui/resource-teardown" && msg.id !== undefined)
      window.parent.postMessage({ jsonrpc: "2.0", id: msg.id, result: {} }, "*");
  });
  document.getElementById("refresh").addEventListener("click", refresh);
  if (window.parent === window) { say("Open this page through an MCP Apps host (the show_trace tool)."); return; }
  request("ui/initialize", {
    appInfo: { name: "rlm-mcp trajectory", version: "1" },
    appCapabilities: { availableDisplayModes: ["inline", "fullscreen"] },
    protocolVersion: "2026-01-26"
  }).then(function () {
    notify("ui/notifications/initialized");
    say("waiting for the trajectory…");
  }, function (e) { say("the host refused to initialize: " + (e && e.message ? e.message : e)); });
})();
