// The play page: draws the newest JPEG frame, sends the set of held keys on every change, and
// measures action-to-frame latency from the key-message seq the server echoes with each frame.
"use strict";

const ARROWS = { ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right", " ": "space" };
const $ = (id) => document.getElementById(id);
const canvas = $("screen");
const ctx = canvas.getContext("2d");

// window.odyssey is read by the browser tests
const st = window.odyssey = { hello: null, frames: 0, lastTick: -1, lastAck: 0, latencies: [], errors: [],
                              full: null, recordings: 0, connected: false };
const held = new Set();
let ws = null, seq = 0;
const sentAt = new Map();   // seq -> performance.now() when sent
const frameTimes = [];      // arrival times over the last second
let decoding = false, pendingFrame = null;

function keyName(e) {
  return ARROWS[e.key] || (e.key.length === 1 ? e.key.toLowerCase() : e.key.toLowerCase());
}

function sendKeys() {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  seq += 1;
  sentAt.set(seq, performance.now());
  if (sentAt.size > 512) sentAt.delete(sentAt.keys().next().value);
  ws.send(JSON.stringify({ type: "keys", seq: seq, keys: [...held] }));
}

function press(name, down) {
  if (!st.hello || !(name in st.hello.keys)) return false;
  if (down === held.has(name)) return true;
  if (down) held.add(name); else held.delete(name);
  for (const b of document.querySelectorAll(`#touch button[data-key="${name}"]`)) b.classList.toggle("held", down);
  sendKeys();
  return true;
}

function setupWorld(h) {
  st.hello = h;
  $("world").textContent = h.world;
  // this world's own keys (take_cover acts on two of them only), from the server's key map
  const keyHelp = Object.keys(h.keys).map((k) => `${k} ${h.buttons[h.keys[k]].toLowerCase().replace(/_/g, " ")}`);
  $("help").textContent = `Keys (held): ${keyHelp.join(", ")}. Touch: hold the buttons.`;
  canvas.width = h.frame_size[1];
  canvas.height = h.frame_size[0];
  fitCanvas();
  const touch = $("touch");
  touch.textContent = "";
  h.buttons.forEach((button, idx) => {
    const key = Object.keys(h.keys).find((k) => h.keys[k] === idx);
    if (key === undefined) return;
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.key = key;
    b.textContent = button.toLowerCase().replace(/_/g, " ").replace(/^move /, "");
    const up = (e) => { e.preventDefault(); press(key, false); };
    b.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      press(key, true);
      try { b.setPointerCapture(e.pointerId); } catch (_) { /* synthetic pointers cannot be captured */ }
    });
    b.addEventListener("pointerup", up);
    b.addEventListener("pointercancel", up);
    b.addEventListener("lostpointercapture", up);
    touch.appendChild(b);
  });
}

function fitCanvas() {
  // the largest integer scale that fits keeps pixels square and crisp
  const scale = Math.max(1, Math.floor(Math.min((window.innerWidth - 16) / canvas.width,
                                                 (window.innerHeight - 200) / canvas.height)));
  canvas.style.width = canvas.width * scale + "px";
  canvas.style.height = canvas.height * scale + "px";
}

function drawNewest() {
  if (decoding || !pendingFrame) return;
  const blob = pendingFrame;
  pendingFrame = null;
  decoding = true;
  createImageBitmap(blob).then((bmp) => {
    ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
    bmp.close();
  }).catch(() => {}).finally(() => { decoding = false; drawNewest(); });
}

function onFrame(buf) {
  const now = performance.now();
  const view = new DataView(buf);
  const tick = view.getUint32(0, true), ack = view.getUint32(4, true);
  st.frames += 1;
  st.lastTick = tick;
  st.lastAck = ack;
  // the first frame made with a key message (or a newer one that superseded it in the same tick) gives its latency
  for (const [s, t] of sentAt) {
    if (s > ack) break;
    st.latencies.push(now - t);
    sentAt.delete(s);
  }
  if (st.latencies.length > 200) st.latencies.splice(0, st.latencies.length - 200);
  frameTimes.push(now);
  while (frameTimes.length && frameTimes[0] < now - 1000) frameTimes.shift();
  pendingFrame = new Blob([buf.slice(8)], { type: "image/jpeg" });  // newest wins: older undrawn ones are dropped
  drawNewest();
}

function percentile(xs, q) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

function onText(text) {
  const m = JSON.parse(text);
  if (m.type === "hello") { setupWorld(m); $("status").textContent = `you are player slot ${m.slot}`; }
  else if (m.type === "stats") {
    $("players").textContent = `${m.players}/${m.max_players}`;
    $("serverfps").textContent = m.server_fps.toFixed(1);
    $("dropped").textContent = m.dropped;
    st.stats = m;
  } else if (m.type === "full") { st.full = m.message; $("status").textContent = m.message; }
  else if (m.type === "error") { st.errors.push(m.message); $("status").textContent = "server: " + m.message; }
  else if (m.type === "record_ready") {
    st.recordings += 1;
    $("status").textContent = `recording ready (${m.frames} frames): downloading`;
    const a = document.createElement("a");
    a.href = m.url;
    a.download = "odyssey-session.mp4";
    document.body.appendChild(a);
    a.click();
    a.remove();
  }
}

function connect() {
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { st.connected = true; };
  ws.onmessage = (e) => (typeof e.data === "string" ? onText(e.data) : onFrame(e.data));
  ws.onclose = (e) => {
    st.connected = false;
    if (!st.full) $("status").textContent = `disconnected (${e.code}); reload to play again`;
  };
}

window.addEventListener("keydown", (e) => {
  if (e.repeat) { if (st.hello && keyName(e) in st.hello.keys) e.preventDefault(); return; }
  if (press(keyName(e), true)) e.preventDefault();
});
window.addEventListener("keyup", (e) => { if (press(keyName(e), false)) e.preventDefault(); });
window.addEventListener("blur", () => { for (const k of [...held]) press(k, false); });
window.addEventListener("resize", fitCanvas);
$("reset").addEventListener("click", () => ws && ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: "reset" })));
$("record").addEventListener("click", () => {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  $("status").textContent = "encoding your session...";
  ws.send(JSON.stringify({ type: "record" }));
});

setInterval(() => {
  $("fps").textContent = frameTimes.length;
  const p50 = percentile(st.latencies, 0.5), p99 = percentile(st.latencies, 0.99);
  $("latency").textContent = isNaN(p50) ? "-" : `${p50.toFixed(0)}/${p99.toFixed(0)}`;
}, 250);

connect();
