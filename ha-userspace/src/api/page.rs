//! The stats page served at `/`: plain HTML, CSS and a little JavaScript
//! in the binary (no build step), in the spirit of HAProxy's stats page. It
//! renders `/api/v1/status` every two seconds and posts drain / enable.

/// The page.
pub const HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>halb stats</title>
<style>
  body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fafafa; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  .sub { color: #666; margin-bottom: 12px; }
  .role { display: inline-block; padding: 1px 8px; border-radius: 3px; font-weight: 600; color: #fff; }
  .MASTER { background: #2e7d32; } .BACKUP { background: #1565c0; } .FAULT { background: #c62828; }
  .INIT, .STANDALONE { background: #757575; }
  table { border-collapse: collapse; margin: 6px 0 18px; background: #fff; min-width: 60%; }
  th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
  th { background: #eceff1; } td.l, th.l { text-align: left; }
  caption { text-align: left; font-weight: 600; padding: 4px 0; font-size: 14px; }
  tr.up td.health { background: #c8e6c9; } tr.down td.health { background: #ffcdd2; }
  tr.checking td.health { background: #fff9c4; } tr.drained td { color: #888; }
  tr.drained td.health { background: #e0e0e0; }
  tr.removing td { color: #888; } tr.removing td.health { background: #ffe0b2; }
  button { font-size: 12px; padding: 1px 8px; cursor: pointer; }
  #err { color: #c62828; }
</style>
</head>
<body>
<h1>halb <span id="node"></span> <span id="role" class="role"></span></h1>
<div class="sub" id="sub">loading…</div>
<div id="err"></div>
<div id="vips"></div>
<table id="dp"><caption>Data plane</caption><tbody></tbody></table>
<script>
"use strict";
const fmt = (n, d = 0) => (n === null || n === undefined) ? "" : Number(n).toLocaleString(undefined, {maximumFractionDigits: d, minimumFractionDigits: d});
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
async function act(vip, backend, action) {
  const headers = {"Content-Type": "application/json"};
  const token = localStorage.getItem("halb-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  let r = await fetch(`/api/v1/vips/${encodeURIComponent(vip)}/backends/${encodeURIComponent(backend)}/${action}`, {method: "POST", headers, body: "{}"});
  if (r.status === 401) {
    const t = prompt("API token");
    if (!t) return;
    localStorage.setItem("halb-token", t);
    return act(vip, backend, action);
  }
  if (!r.ok) { document.getElementById("err").textContent = (await r.json()).error; }
  refresh();
}
async function nodeAct(action) {
  const headers = {"Content-Type": "application/json"};
  const token = localStorage.getItem("halb-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  let r = await fetch(`/api/v1/node/${action}`, {method: "POST", headers, body: "{}"});
  if (r.status === 401) {
    const t = prompt("API token");
    if (!t) return;
    localStorage.setItem("halb-token", t);
    return nodeAct(action);
  }
  if (!r.ok) { document.getElementById("err").textContent = (await r.json()).error; }
  refresh();
}
function render(s) {
  document.getElementById("node").textContent = s.node.name;
  const insts = s.vrrp_instances || [];
  const role = insts.length === 0 ? "STANDALONE" : insts.length === 1 ? insts[0].state
    : (insts.every(v => v.state === "MASTER") ? "MASTER" : insts.some(v => v.state === "MASTER") ? "ACTIVE" : insts[0].state);
  const re = document.getElementById("role");
  re.textContent = role; re.className = "role " + role;
  let sub = `interface ${esc(s.node.interface)} · XDP ${esc(s.node.xdp_mode)} · up ${fmt(s.node.uptime_s)} s · halb ${esc(s.node.version)}`;
  for (const v of insts) {
    sub += `<br><span data-instance="${esc(v.name)}" class="inst ${esc(v.state)}">instance ${esc(v.name)} <b>${esc(v.state)}</b></span>` +
      ` · VRRPv${v.version} vrid ${v.router_id} on ${esc(v.interface)} · priority ${v.priority}/${v.base_priority}` +
      (v.master ? ` · master ${esc(v.master)}` : "") +
      (v.sync_group ? ` · sync group ${esc(v.sync_group)}` : "") +
      ` · vips ${esc(v.vips.join(", "))}` +
      ` · peers ${v.peers.length ? v.peers.map(esc).join(", ") : "multicast"}` +
      ` · adverts ${fmt(v.adverts_sent)} out / ${fmt(v.adverts_received)} in`;
    const rej = Object.entries(v.rejected).map(([k, n]) => `${k} ${n}`).join(", ");
    if (rej) sub += ` · rejected: ${esc(rej)}`;
    const tr = Object.entries(v.tracking).map(([k, e]) => `${k}: ${e}`).join(", ");
    if (tr) sub += ` · tracking: ${esc(tr)}`;
  }
  if (s.bgp) {
    const b = s.bgp;
    sub += `<br><span id="bgp" data-drained="${b.drained}">BGP: node <b>${b.drained ? "DRAINED" : "enabled"}</b>` +
      (b.dataplane_attached ? "" : " · <b>XDP not attached</b>") + ` · device ${esc(b.device)} table ${b.table}</span> ` +
      `<button data-action="node-${b.drained ? "enable" : "drain"}" onclick="nodeAct('${b.drained ? "enable" : "drain"}')">${b.drained ? "enable node" : "drain node"}</button>`;
    for (const a of b.announcements) {
      sub += `<br><span class="ann ${a.announced ? "up" : "down"}" data-address="${esc(a.address)}">${a.announced ? "announced" : "withdrawn"} ${esc(a.address)}</span>: ${esc(a.reason)} · for ${fmt(a.since_s)} s`;
    }
    for (const x of b.sessions) sub += `<br>session ${esc(x.name)} (${esc(x.kind)}) ${esc(x.state)}: ${esc(x.info)}`;
    if (b.daemon_error) sub += `<br>routing daemon: ${esc(b.daemon_error)}`;
  }
  for (const g of (s.sync_groups || [])) {
    sub += `<br>sync group ${esc(g.name)} <b>${esc(g.state)}</b>: ${esc(g.instances.join(", "))}`;
  }
  document.getElementById("sub").innerHTML = sub;
  let html = "";
  for (const vip of s.vips) {
    html += `<table class="vip" data-vip="${esc(vip.name)}"><caption>${esc(vip.name)} — ${esc(vip.address.includes(":") ? "[" + vip.address + "]" : vip.address)}:${vip.port}/${esc(vip.protocol)} ${esc(vip.mode)} · check ${esc(vip.check)} · ${vip.healthy_backends}/${vip.backends.length} healthy</caption>` +
      `<thead><tr><th class="l">backend</th><th class="l">address</th><th>health</th><th>weight</th><th class="l">last check</th><th>latency ms</th><th>flows</th><th>pkt/s</th><th>bytes/s</th><th>new flows/s</th><th>packets</th><th>bytes</th><th></th></tr></thead><tbody>`;
    for (const b of vip.backends) {
      const cls = b.drained ? "drained" : b.health;
      const c = b.last_check;
      const live = b.removal && b.removal.live_flows !== null ? ", " + b.removal.live_flows + " live flows" : "";
      const shown = b.drained ? "drained" : b.removing ? `removing${live}, ${fmt(b.removal.deadline_in_s)} s left` : b.health;
      const btn = b.removing ? "" : b.drained
        ? `<button data-action="enable" onclick="act('${esc(vip.name)}','${esc(b.name)}','enable')">enable</button>`
        : `<button data-action="drain" onclick="act('${esc(vip.name)}','${esc(b.name)}','drain')">drain</button>`;
      html += `<tr class="${cls}" data-backend="${esc(b.name)}"><td class="l">${esc(b.name)}</td><td class="l">${esc(b.address)}</td>` +
        `<td class="health">${esc(shown)}</td><td>${b.weight}${b.weight !== b.config_weight ? " (" + b.config_weight + ")" : ""}</td>` +
        `<td class="l">${c ? esc(c.detail) + " · " + fmt(c.age_s, 1) + " s ago" : ""}</td><td>${c ? fmt(c.latency_ms, 1) : ""}</td>` +
        `<td>${fmt(b.flows)}</td><td>${fmt(b.pps, 1)}</td><td>${fmt(b.bytes_per_s)}</td><td>${fmt(b.new_flows_per_s, 1)}</td>` +
        `<td>${fmt(b.packets)}</td><td>${fmt(b.bytes)}</td><td>${btn}</td></tr>`;
    }
    html += "</tbody></table>";
  }
  document.getElementById("vips").innerHTML = html;
  const dp = s.dataplane;
  let rows = `<tr><th class="l">packets/s</th><td>${fmt(dp.pps, 1)}</td></tr><tr><th class="l">flows</th><td>${fmt(dp.flows)} / ${fmt(dp.flow_capacity)}</td></tr>`;
  for (const [k, n] of Object.entries(dp.actions)) rows += `<tr><th class="l">${esc(k)}</th><td>${fmt(n)}</td></tr>`;
  for (const [k, n] of Object.entries(dp.reasons)) if (n) rows += `<tr><th class="l">&nbsp;&nbsp;${esc(k)}</th><td>${fmt(n)}</td></tr>`;
  document.querySelector("#dp tbody").innerHTML = rows;
  document.body.dataset.loaded = "1";
}
async function refresh() {
  try {
    const r = await fetch("/api/v1/status", {cache: "no-store"});
    render(await r.json());
    document.getElementById("err").textContent = "";
  } catch (e) {
    document.getElementById("err").textContent = "agent unreachable: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"##;
