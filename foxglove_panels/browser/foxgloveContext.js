// In-page host for the built extension (dist/extension.js): what Foxglove Studio does for a panel, reduced to
// what these panels use, over a real foxglove.sdk.v1 WebSocket connection (ws-protocol spec: text JSON ops;
// binary 0x01 messageData, 0x02 time, 0x03 serviceCallResponse from the server; 0x02 serviceCallRequest from
// the client; little-endian). JSON channels are decoded to objects as Studio does; others are left out.
/* eslint-disable */
(function () {
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();

  class FoxgloveConnection {
    constructor(url) {
      this.channels = new Map(); // id -> channel
      this.services = new Map(); // name -> service
      this.wanted = new Set(); // topics the panel subscribed to
      this.subscriptions = new Map(); // topic -> subscription id
      this.bySubscription = new Map(); // subscription id -> channel
      this.pending = new Map(); // call id -> {resolve, reject}
      this.queue = [];
      this.statuses = [];
      this.nextId = 1;
      this.ws = new WebSocket(url, ["foxglove.sdk.v1"]);
      this.ws.binaryType = "arraybuffer";
      this.ready = new Promise((resolve, reject) => {
        this.ws.onopen = () => resolve();
        this.ws.onerror = () => reject(new Error("cannot connect to " + url));
      });
      this.ws.onmessage = (ev) => (typeof ev.data === "string" ? this.onText(JSON.parse(ev.data)) : this.onBinary(ev.data));
    }

    onText(msg) {
      if (msg.op === "advertise") {
        for (const ch of msg.channels) {
          this.channels.set(ch.id, ch);
          if (this.wanted.has(ch.topic)) this.subscribeTopic(ch.topic);
        }
      } else if (msg.op === "advertiseServices") {
        for (const s of msg.services) this.services.set(s.name, s);
      } else if (msg.op === "unadvertiseServices") {
        for (const [name, s] of this.services) if (msg.serviceIds.includes(s.id)) this.services.delete(name);
      } else if (msg.op === "serviceCallFailure") {
        const p = this.pending.get(msg.callId);
        if (p) { this.pending.delete(msg.callId); p.reject(new Error(msg.message)); }
      } else if (msg.op === "status") {
        this.statuses.push(msg);
      }
    }

    onBinary(buf) {
      const view = new DataView(buf);
      const op = view.getUint8(0);
      if (op === 0x01) {
        const sub = view.getUint32(1, true);
        const ch = this.bySubscription.get(sub);
        if (!ch || ch.encoding !== "json") return;
        const nanos = view.getBigUint64(5, true);
        const payload = new Uint8Array(buf, 13);
        this.queue.push({
          topic: ch.topic, schemaName: ch.schemaName, sizeInBytes: payload.byteLength,
          receiveTime: { sec: Number(nanos / 1000000000n), nsec: Number(nanos % 1000000000n) },
          message: JSON.parse(decoder.decode(payload)),
        });
      } else if (op === 0x03) {
        const callId = view.getUint32(5, true);
        const encLen = view.getUint32(9, true);
        const p = this.pending.get(callId);
        if (p) {
          this.pending.delete(callId);
          const body = decoder.decode(new Uint8Array(buf, 13 + encLen));
          p.resolve(body ? JSON.parse(body) : {});
        }
      }
    }

    subscribeTopic(topic) {
      if (this.subscriptions.has(topic)) return;
      const ch = [...this.channels.values()].find((c) => c.topic === topic);
      if (!ch) return; // subscribed when advertised
      const id = this.nextId++;
      this.subscriptions.set(topic, id);
      this.bySubscription.set(id, ch);
      this.ws.send(JSON.stringify({ op: "subscribe", subscriptions: [{ id, channelId: ch.id }] }));
    }

    setWanted(topics) {
      const drop = [...this.subscriptions].filter(([t]) => !topics.includes(t));
      if (drop.length) {
        this.ws.send(JSON.stringify({ op: "unsubscribe", subscriptionIds: drop.map(([, id]) => id) }));
        for (const [t, id] of drop) { this.subscriptions.delete(t); this.bySubscription.delete(id); }
      }
      this.wanted = new Set(topics);
      for (const t of topics) this.subscribeTopic(t);
    }

    async waitForService(name, timeoutMs) {
      const end = Date.now() + timeoutMs;
      while (!this.services.has(name) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      return this.services.get(name);
    }

    async callService(name, request) {
      const svc = await this.waitForService(name, 5000);
      if (!svc) throw new Error(`Service ${name} is not available`);
      const callId = this.nextId++;
      const enc = encoder.encode("json");
      const payload = encoder.encode(JSON.stringify(request ?? {}));
      const buf = new Uint8Array(13 + enc.length + payload.length);
      const view = new DataView(buf.buffer);
      view.setUint8(0, 0x02);
      view.setUint32(1, svc.id, true);
      view.setUint32(5, callId, true);
      view.setUint32(9, enc.length, true);
      buf.set(enc, 13);
      buf.set(payload, 13 + enc.length);
      return new Promise((resolve, reject) => {
        this.pending.set(callId, { resolve, reject });
        this.ws.send(buf);
        setTimeout(() => {
          if (this.pending.delete(callId)) reject(new Error(`${name}: no reply in 30 s`));
        }, 30000);
      });
    }

    panelContext(panelElement) {
      const conn = this;
      let onRender;
      let rendering = false;
      let first = true;
      const ctx = {
        panelElement,
        initialState: undefined,
        dataSourceProfile: "ros2",
        layout: {},
        watch() {},
        saveState() {},
        setDefaultPanelTitle() {},
        subscribeAppSettings() {},
        setSharedPanelState() {},
        setVariable() {},
        updatePanelSettingsEditor() {},
        setPreviewTime() {},
        subscribe(subs) { conn.setWanted(subs.map((s) => (typeof s === "string" ? s : s.topic))); },
        unsubscribeAll() { conn.setWanted([]); },
        callService: (name, request) => conn.callService(name, request),
        setParameter(name, value) {
          conn.ws.send(JSON.stringify({ op: "setParameters", parameters: [{ name, value }] }));
        },
      };
      Object.defineProperty(ctx, "onRender", { get: () => onRender, set: (fn) => { onRender = fn; } });
      setInterval(() => {
        if (!onRender || rendering || (!first && conn.queue.length === 0)) return;
        first = false;
        rendering = true;
        const topics = [...conn.channels.values()].map((c) => ({ name: c.topic, schemaName: c.schemaName, datatype: c.schemaName }));
        onRender({ currentFrame: conn.queue.splice(0), topics }, () => { rendering = false; });
      }, 50);
      return ctx;
    }
  }

  window.startPanel = async function (bundleCode, panelName, url) {
    const module = { exports: {} };
    const require = (name) => {
      if (name === "@foxglove/extension") return {};
      throw new Error("extension requires unknown module " + name);
    };
    new Function("module", "exports", "require", bundleCode)(module, module.exports, require);
    const panels = {};
    module.exports.activate({
      mode: "production",
      registerPanel: (p) => { panels[p.name] = p; },
      registerMessageConverter() {},
      registerTopicAliases() {},
    });
    window.registeredPanels = Object.keys(panels);
    if (!panels[panelName]) throw new Error(`no panel ${panelName}; registered: ${window.registeredPanels}`);
    const conn = new FoxgloveConnection(url);
    window.foxglove = conn;
    await conn.ready;
    panels[panelName].initPanel(conn.panelContext(document.getElementById("panel")));
  };
})();
