// lipx serve's page: the browser's camera streamed to /ws (docs/protocol.md, protocol 1).
//
// One Start makes one Stream: the camera, a WebSocket, a hello; after the server's ready, frames
// at the model's fps (JPEG, "LXF1" + float64 capture time); words, boxes, stats and speech as
// they come back. Stop sends end and waits for the server's end. The state is in #status:
// "connecting", "streaming", "reconnecting: <reason>", "ended" or "error: <reason>".
// A stream the server loses (its socket closes without an end, or it ends because the server
// stops) reconnects as a new session, up to MAX_RECONNECTS times in a row; the words of the
// window the lost session held are lost.
// URL parameters drive it without a click: ?model=NAME&crop=lrw&autostart=1.

const PROTOCOL = 1;
const MAX_BUFFERED_BYTES = 2 << 20; // frames waiting in the socket beyond this: skip frames
const MAX_ENCODING = 2; // JPEG encodes in flight beyond this: skip frames
const JPEG_QUALITY = 0.9;
const AUDIO_LEAD_S = 0.15; // speech starts this late, so that chunks join without gaps
const END_TIMEOUT_MS = 15000; // longest wait for the server's end after ours
const MAX_RECONNECTS = 5; // in a row, without a ready between them
const RECONNECT_MS = [250, 500, 1000, 2000, 4000]; // the wait before each of them

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), modelField: $("model-field"), crop: $("crop"), start: $("start"),
  status: $("status"), camera: $("camera"), overlay: $("overlay"), words: $("words"),
  latency: $("latency"), stats: $("stats"),
};

let models = []; // /models' list
let stream = null; // the current (or last) Stream

function setStatus(text) {
  ui.status.textContent = text;
  ui.status.dataset.state = text.split(":")[0];
}

function magic(buffer) {
  return buffer.byteLength < 4 ? "" : String.fromCharCode(...new Uint8Array(buffer, 0, 4));
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

const seconds = (s) => `${s.toFixed(2)} s`;

/** The words read, and their emission latency (the server's emitted_s - end_s). */
class Captions {
  constructor() {
    this.words = [];
    this.latencies = [];
    ui.words.textContent = "";
    ui.latency.textContent = "-";
  }

  add(msg) {
    this.words.push(msg.word);
    ui.words.textContent = this.words.join(" ");
    if (typeof msg.emitted_s === "number" && typeof msg.end_s === "number") {
      const latency = msg.emitted_s - msg.end_s;
      this.latencies.push(latency);
      ui.latency.textContent = `last ${seconds(latency)} · median ` +
        `${seconds(median(this.latencies))} (${this.latencies.length} words)`;
    }
  }
}

/** Speech chunks played back to back, each at its own sample rate (WebAudio resamples). */
class Speaker {
  constructor() {
    this.context = null;
    this.at = 0; // when the next chunk starts, on the context's clock
    this.seconds = 0;
  }

  /** Make (or wake) the AudioContext; called on the Start click, which browsers require. */
  unlock() {
    this.context ??= new AudioContext();
    this.context.resume().catch(() => {});
  }

  /** An "LXA1" message: magic, float64 start_s, float64 emitted_s, uint32 rate, float32 samples. */
  play(buffer) {
    const rate = new DataView(buffer).getUint32(20, true);
    const samples = new Float32Array(buffer, 24, (buffer.byteLength - 24) >> 2); // little-endian
    if (!samples.length) return;
    this.context ??= new AudioContext();
    const chunk = this.context.createBuffer(1, samples.length, rate);
    chunk.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = chunk;
    source.connect(this.context.destination);
    if (this.at < this.context.currentTime) this.at = this.context.currentTime + AUDIO_LEAD_S;
    source.start(this.at);
    this.at += chunk.duration;
    this.seconds += chunk.duration;
  }
}

/** Camera frames to the socket at most at the model's fps, as JPEG frame messages. */
class FrameSender {
  constructor(video, ws, fps) {
    this.video = video;
    this.ws = ws;
    this.fps = fps;
    this.canvas = document.createElement("canvas");
    this.t0 = null; // the first frame's capture time: the stream's zero
    this.tick = -1; // the model tick of the last frame sent
    this.lastT = -Infinity;
    this.encoding = 0;
    this.running = true;
    if ("requestVideoFrameCallback" in video) this.onVideoFrame();
    else this.onTimer(performance.now());
  }

  stop() {
    this.running = false;
    clearTimeout(this.timer);
  }

  /** Each new camera frame, with the time the camera took it. */
  onVideoFrame() {
    this.video.requestVideoFrameCallback((now, meta) => {
      if (!this.running) return;
      this.capture((meta.captureTime ?? performance.now()) / 1000);
      this.onVideoFrame();
    });
  }

  /** Without frame callbacks: a timer at the model's fps, correcting its drift. */
  onTimer(due) {
    if (!this.running) return;
    this.capture(performance.now() / 1000);
    const period = 1000 / this.fps;
    const now = performance.now();
    const next = due + period < now ? now + period : due + period; // behind: no burst
    this.timer = setTimeout(() => this.onTimer(next), next - now);
  }

  capture(t) {
    const { video, canvas, ws } = this;
    if (video.readyState < 2 || !video.videoWidth) return;
    const tick = this.t0 === null ? 0 : Math.round((t - this.t0) * this.fps);
    if (tick <= this.tick) return; // the camera is faster than the model
    if (ws.bufferedAmount > MAX_BUFFERED_BYTES || this.encoding >= MAX_ENCODING) return;
    this.t0 ??= t;
    this.tick = tick;
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    this.encoding += 1;
    canvas.toBlob((jpeg) => {
      this.encoding -= 1;
      if (!this.running || !jpeg || t <= this.lastT || ws.readyState !== WebSocket.OPEN) return;
      this.lastT = t;
      const head = new DataView(new ArrayBuffer(12));
      [..."LXF1"].forEach((c, i) => head.setUint8(i, c.charCodeAt(0)));
      head.setFloat64(4, t, true);
      ws.send(new Blob([head.buffer, jpeg]));
    }, "image/jpeg", JPEG_QUALITY);
  }
}

/** The mouth box ([x1, y1, x2, y2] in frame pixels, or null) over the video. */
function drawBox(box) {
  const { overlay, camera } = ui;
  if (camera.videoWidth && overlay.width !== camera.videoWidth) {
    overlay.width = camera.videoWidth;
    overlay.height = camera.videoHeight;
  }
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  if (!box) return;
  const [x1, y1, x2, y2] = box;
  ctx.lineWidth = Math.max(2, overlay.width / 200);
  ctx.strokeStyle = "#4ade80";
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
}

function showStats(msg, speaker) {
  const parts = [`frames ${msg.frames}`, `dropped ${msg.dropped}`];
  if (msg.skipped) parts.push(`skipped ${msg.skipped}`);
  if (speaker.seconds) parts.push(`speech ${speaker.seconds.toFixed(1)} s`);
  ui.stats.textContent = parts.join(" · ");
}

/** One stream: camera, socket, hello, frames, results, end. */
class Stream {
  constructor(model, crop, speaker) {
    this.model = model; // an entry of /models, or undefined when it could not be read
    this.crop = crop;
    this.speaker = speaker;
    this.captions = new Captions();
    this.done = false;
    this.opened = false;
    this.ready = false;
    this.stopping = false;
    this.ws = null;
    this.sender = null;
    this.reconnects = 0; // in a row
  }

  async start() {
    setStatus("connecting");
    try {
      this.camera = await navigator.mediaDevices.getUserMedia({ video: true });
    } catch (e) {
      return this.finish(`error: camera: ${e.message || e.name}`);
    }
    if (this.done) { // stopped while the camera was asked for
      this.camera.getTracks().forEach((track) => track.stop());
      return;
    }
    ui.camera.srcObject = this.camera;
    ui.camera.play().catch(() => {});
    this.connect();
  }

  /** A socket and a hello: a new session (again, after a lost one). */
  connect() {
    this.opened = this.ready = false;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = this.ws = new WebSocket(`${scheme}${location.host}/ws`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      this.opened = true;
      ws.send(JSON.stringify(this.hello()));
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return; // a lost session's last messages
      if (typeof ev.data === "string") this.onText(JSON.parse(ev.data));
      else this.onBinary(ev.data);
    };
    ws.onclose = (ev) => this.onClose(ev);
  }

  hello() {
    const hello = { type: "hello", protocol: PROTOCOL, format: "jpeg", crop: this.crop,
                    live: true, boxes: true };
    if (this.model) Object.assign(hello, { model: this.model.name, fps: this.model.fps });
    return hello;
  }

  onText(msg) {
    if (this.done) return;
    switch (msg.type) {
      case "ready":
        this.ready = true;
        this.reconnects = 0;
        ui.status.dataset.server = msg.server ?? ""; // the process (Ray replica) serving it
        setStatus("streaming");
        this.sender = new FrameSender(ui.camera, this.ws, msg.fps);
        return;
      case "word": return this.captions.add(msg);
      case "box": return drawBox(msg.box);
      case "stats": return showStats(msg, this.speaker);
      case "end":
        if (msg.reason && !this.stopping) return this.reconnect(msg.reason);
        return this.finish("ended");
      case "error": return this.finish(`error: ${msg.reason}`);
      default: // a newer server's message: ignored
    }
  }

  onBinary(buffer) {
    if (!this.done && magic(buffer) === "LXA1") this.speaker.play(buffer);
  }

  onClose(ev) {
    if (this.done || ev.target !== this.ws) return;
    if (this.ready && !this.stopping) { // lost mid-stream: the server went away
      return this.reconnect(ev.reason || `the server lost the stream (${ev.code})`);
    }
    if (this.reconnects > 0 && !this.stopping) {
      return this.reconnect(ev.reason || "cannot reach the server");
    }
    const why = ev.reason || (this.opened ? `connection closed (${ev.code})`
                                          : "cannot reach the server");
    this.finish(`error: ${why}`);
  }

  /** A new session after a lost one, unless too many failed in a row. */
  reconnect(why) {
    this.sender?.stop();
    this.sender = null;
    this.ready = false;
    const old = this.ws;
    this.ws = null; // its close event is no longer this stream's
    if (old && old.readyState <= WebSocket.OPEN) old.close(1000);
    if (this.reconnects >= MAX_RECONNECTS) return this.finish(`error: ${why}`);
    setStatus(`reconnecting: ${why}`);
    setTimeout(() => { if (!this.done) this.connect(); }, RECONNECT_MS[this.reconnects]);
    this.reconnects += 1;
  }

  /** Stop sending; the server finishes what it holds and answers end. */
  stop() {
    if (this.done || this.stopping) return;
    if (!this.ready) return this.finish("ended");
    this.stopping = true;
    this.sender.stop();
    this.ws.send(JSON.stringify({ type: "end" }));
    this.endTimer = setTimeout(() => this.finish("error: the server did not end the stream"),
                               END_TIMEOUT_MS);
    render();
  }

  finish(status) {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.endTimer);
    this.sender?.stop();
    this.camera?.getTracks().forEach((track) => track.stop());
    ui.camera.srcObject = null;
    drawBox(null);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    setStatus(status);
    render();
  }
}

/** The controls for the current state. */
function render() {
  const busy = stream && !stream.done;
  ui.start.textContent = !busy ? "Start" : stream.stopping ? "Stopping…" : "Stop";
  ui.start.disabled = Boolean(busy && stream.stopping);
  ui.model.disabled = ui.crop.disabled = Boolean(busy);
}

const speaker = new Speaker();

function toggle() {
  if (stream && !stream.done) return stream.stop();
  const model = models.find((m) => m.name === ui.model.value) ?? models[0];
  if (model?.task === "lip2speech") speaker.unlock();
  stream = new Stream(model, ui.crop.value, speaker);
  render();
  stream.start();
}

async function loadModels(wanted) {
  const reply = await fetch("/models");
  if (!reply.ok) throw new Error(`/models answered ${reply.status}`);
  models = (await reply.json()).models;
  for (const m of models) {
    ui.model.add(new Option(`${m.name} (${m.task}, ${m.fps} fps)`, m.name, m.default,
                            wanted ? m.name === wanted : m.default));
  }
  ui.modelField.hidden = models.length < 2;
}

async function main() {
  const params = new URLSearchParams(location.search);
  if (["auto", "lrw"].includes(params.get("crop"))) ui.crop.value = params.get("crop");
  ui.start.addEventListener("click", toggle);
  render();
  try {
    await loadModels(params.get("model"));
  } catch (e) {
    setStatus(`error: cannot list the models: ${e.message}`);
    return;
  }
  if (params.get("model") && !models.some((m) => m.name === params.get("model"))) {
    setStatus(`error: no model ${params.get("model")} is served`);
    return;
  }
  if (params.get("autostart") === "1") toggle();
}

main();
