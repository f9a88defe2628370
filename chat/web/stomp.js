/*
 * stomp.js — a small STOMP 1.2 client over WebSocket, written for Sockeye Chat.
 *
 *   const client = new SockeyeStomp.Client('ws://host/ws', {
 *     onStateChange: (state) => …,   // 'idle' | 'connecting' | 'connected' | 'reconnecting'
 *     onConnect: (frame) => …,       // after every CONNECTED (subscriptions already renewed)
 *     onStompError: (frame) => …,    // an ERROR frame (the server closes after it)
 *   });
 *   const sub = client.subscribe('/topic/x', (message) => console.log(message.body));
 *   client.activate();
 *   client.send('/app/y', JSON.stringify({ a: 1 }), { 'content-type': 'application/json' });
 *
 * Subscriptions outlive connections: after a reconnect they are sent again. Frames are parsed
 * from bytes, so a frame may be split across WebSocket messages or several batched in one,
 * text and binary messages alike (bodies are decoded as UTF-8); EOLs between frames are
 * heart-beats. A lost connection is retried with exponential backoff (with jitter).
 *
 * Works as a classic <script> (defines `SockeyeStomp`) and as a CommonJS module (for tests).
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === 'object' && module.exports) {
    module.exports = api;
  } else {
    root.SockeyeStomp = api;
  }
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  const encoder = new TextEncoder();
  const decoder = new TextDecoder('utf-8');
  const LF = 10;
  const CR = 13;
  const NUL = 0;

  /** STOMP 1.2 header escaping (not used in CONNECT/CONNECTED). */
  function escapeHeader(value) {
    return String(value)
      .replace(/\\/g, '\\\\')
      .replace(/\r/g, '\\r')
      .replace(/\n/g, '\\n')
      .replace(/:/g, '\\c');
  }

  function unescapeHeader(value) {
    return value.replace(/\\([rnc\\])/g, (_, c) =>
      c === 'r' ? '\r' : c === 'n' ? '\n' : c === 'c' ? ':' : '\\');
  }

  /** A frame as text: command, headers, blank line, body, NUL. */
  function encodeFrame(command, headers, body) {
    const escape = command !== 'CONNECT' && command !== 'STOMP';
    let text = command + '\n';
    for (const [name, value] of Object.entries(headers || {})) {
      if (value === undefined || value === null) continue;
      text += escape
        ? escapeHeader(name) + ':' + escapeHeader(value) + '\n'
        : name + ':' + value + '\n';
    }
    return text + '\n' + (body || '') + '\0';
  }

  function toBytes(data) {
    if (typeof data === 'string') return encoder.encode(data);
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    throw new TypeError('unsupported WebSocket data');
  }

  function indexOf(bytes, value, from) {
    for (let i = from; i < bytes.length; i++) if (bytes[i] === value) return i;
    return -1;
  }

  /**
   * Incremental frame parser. `push(data)` takes a WebSocket message (string, ArrayBuffer or
   * Uint8Array) and returns what became complete: `{ type: 'heartbeat' }` for each EOL between
   * frames, and `{ type: 'frame', command, headers, body, bytes }` for each frame. Repeated
   * headers: the first wins (STOMP 1.2). Throws on a frame that breaks the protocol.
   */
  class FrameParser {
    constructor(options) {
      this.maxFrameBytes = (options && options.maxFrameBytes) || 16 * 1024 * 1024;
      this.buffer = new Uint8Array(0);
    }

    push(data) {
      const chunk = toBytes(data);
      let buf;
      if (this.buffer.length === 0) {
        buf = chunk;
      } else {
        buf = new Uint8Array(this.buffer.length + chunk.length);
        buf.set(this.buffer, 0);
        buf.set(chunk, this.buffer.length);
      }
      const out = [];
      let pos = 0;
      for (;;) {
        // Heart-beats: EOLs between frames.
        while (pos < buf.length) {
          if (buf[pos] === LF) {
            out.push({ type: 'heartbeat' });
            pos += 1;
          } else if (buf[pos] === CR && pos + 1 < buf.length && buf[pos + 1] === LF) {
            out.push({ type: 'heartbeat' });
            pos += 2;
          } else {
            break;
          }
        }
        if (pos >= buf.length) break;
        const frame = this.parseFrame(buf, pos);
        if (!frame) {
          if (buf.length - pos > this.maxFrameBytes) {
            throw new Error('frame larger than ' + this.maxFrameBytes + ' bytes');
          }
          break;
        }
        out.push(frame.frame);
        pos = frame.end;
      }
      // Keep the incomplete rest (a copy, so the big buffer can go).
      this.buffer = pos >= buf.length ? new Uint8Array(0) : buf.slice(pos);
      return out;
    }

    /** One frame starting at `start`, or null if incomplete. */
    parseFrame(buf, start) {
      // The head ends at the first empty line.
      const lines = [];
      let lineStart = start;
      let bodyStart = -1;
      for (;;) {
        const nl = indexOf(buf, LF, lineStart);
        if (nl < 0) return null;
        const lineEnd = nl > lineStart && buf[nl - 1] === CR ? nl - 1 : nl;
        if (lineEnd === lineStart && lines.length > 0) {
          bodyStart = nl + 1;
          break;
        }
        lines.push(decoder.decode(buf.subarray(lineStart, lineEnd)));
        lineStart = nl + 1;
      }
      const command = lines[0];
      if (!/^[A-Z]+$/.test(command)) {
        throw new Error('bad STOMP command ' + JSON.stringify(command.slice(0, 32)));
      }
      const escaped = command !== 'CONNECTED';
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i].indexOf(':');
        if (colon < 0) throw new Error('bad STOMP header line');
        let name = lines[i].slice(0, colon);
        let value = lines[i].slice(colon + 1);
        if (escaped) {
          name = unescapeHeader(name);
          value = unescapeHeader(value);
        }
        if (!(name in headers)) headers[name] = value;
      }
      let bodyEnd;
      const length = headers['content-length'];
      if (length !== undefined && /^\d+$/.test(length)) {
        bodyEnd = bodyStart + Number(length);
        if (bodyEnd >= buf.length) return null;
        if (buf[bodyEnd] !== NUL) throw new Error('frame body not terminated by NUL');
      } else {
        bodyEnd = indexOf(buf, NUL, bodyStart);
        if (bodyEnd < 0) return null;
      }
      const bytes = buf.slice(bodyStart, bodyEnd);
      return {
        frame: { type: 'frame', command, headers, body: decoder.decode(bytes), bytes },
        end: bodyEnd + 1,
      };
    }
  }

  const defaultTimers = {
    setTimeout: (f, ms) => setTimeout(f, ms),
    clearTimeout: (id) => clearTimeout(id),
    setInterval: (f, ms) => setInterval(f, ms),
    clearInterval: (id) => clearInterval(id),
    now: () => Date.now(),
  };

  /**
   * A STOMP client that stays connected. States: 'idle' (not activated), 'connecting' (the
   * first attempt), 'connected', 'reconnecting' (waiting to retry, or retrying).
   */
  class Client {
    constructor(url, options) {
      const o = options || {};
      this.url = url;
      this.protocols = o.protocols || ['v12.stomp', 'v11.stomp', 'v10.stomp'];
      this.connectHeaders = o.connectHeaders || {};
      /** [cx, cy]: we can send every cx ms, want to hear from the server every cy ms. */
      this.heartbeat = o.heartbeat || [10000, 10000];
      this.reconnect = Object.assign({ initial: 500, max: 30000, factor: 2 }, o.reconnect);
      this.connectTimeout = o.connectTimeout || 10000;
      this.WebSocket = o.WebSocket || (typeof WebSocket !== 'undefined' ? WebSocket : null);
      /**
       * `{ url, Socket }`: a WebSocket-like class (SockJS) to fall back on. Used from the start
       * without a WebSocket; otherwise a socket that closes before it ever opened switches
       * transports for the next attempt (so a blocked upgrade costs one attempt, and a server
       * that is down is tried both ways). A transport that works is kept.
       */
      this.fallback = o.fallback || null;
      this.viaFallback = !this.WebSocket && !!this.fallback;
      this.timers = o.timers || defaultTimers;
      this.random = o.random || Math.random;
      this.onStateChange = o.onStateChange || (() => {});
      this.onConnect = o.onConnect || (() => {});
      this.onStompError = o.onStompError || (() => {});
      this.onReceipt = o.onReceipt || (() => {});
      this.onDebug = o.onDebug || (() => {});
      this.state = 'idle';
      this.active = false;
      this.ws = null;
      this.parser = null;
      this.version = null;
      this.attempt = 0;
      this.subscriptions = new Map();
      this.nextId = 1;
      this.timer = null; // reconnect or connect timeout
      this.beats = [];
      this.lastReceived = 0;
      this.lastSent = 0;
    }

    get connected() {
      return this.state === 'connected';
    }

    /** Starts connecting (and staying connected). */
    activate() {
      if (this.active) return;
      this.active = true;
      this.attempt = 0;
      this.open('connecting');
    }

    /** Disconnects and stops reconnecting. Subscriptions are kept for a later activate(). */
    deactivate() {
      this.active = false;
      this.clearTimers();
      if (this.ws) {
        if (this.connected) this.write(encodeFrame('DISCONNECT', {}, ''));
        this.drop('deactivated');
      }
      this.setState('idle');
    }

    /** Retries at once if waiting to reconnect (e.g. the browser came back online). */
    reconnectNow() {
      if (this.active && this.state === 'reconnecting' && !this.ws) {
        this.clearTimers();
        this.open('reconnecting');
      }
    }

    /** Subscribes (now if connected, and again after every reconnect). */
    subscribe(destination, callback, headers) {
      const id = 'sub-' + this.nextId++;
      const sub = { id, destination, callback, headers: headers || {} };
      this.subscriptions.set(id, sub);
      if (this.connected) this.sendSubscribe(sub);
      return { id, unsubscribe: () => this.unsubscribe(id) };
    }

    unsubscribe(id) {
      if (!this.subscriptions.delete(id)) return;
      if (this.connected) this.write(encodeFrame('UNSUBSCRIBE', { id }, ''));
    }

    /**
     * Sends a message; `false` if not connected (nothing is queued: the caller decides).
     * `content-length` is always set (bodies may contain NUL); `content-type` defaults to
     * text/plain.
     */
    send(destination, body, headers) {
      if (!this.connected) return false;
      const text = body === undefined || body === null ? '' : String(body);
      const all = Object.assign({ 'content-type': 'text/plain;charset=utf-8' }, headers, {
        destination,
        'content-length': encoder.encode(text).length,
      });
      return this.write(encodeFrame('SEND', all, text));
    }

    // --- internals ---

    setState(state) {
      if (this.state === state) return;
      this.state = state;
      try {
        this.onStateChange(state);
      } catch (e) {
        this.onDebug('onStateChange threw: ' + e);
      }
    }

    /** After a socket that never opened: try the other transport next time. */
    switchTransport() {
      if (this.fallback && this.WebSocket) {
        this.viaFallback = !this.viaFallback;
        this.onDebug('next attempt over ' + (this.viaFallback ? 'the fallback' : 'WebSocket'));
      }
    }

    open(state) {
      this.setState(state);
      this.parser = new FrameParser();
      const Socket = this.viaFallback ? this.fallback.Socket : this.WebSocket;
      const url = this.viaFallback ? this.fallback.url : this.url;
      let ws;
      let opened = false;
      try {
        ws = new Socket(url, this.protocols);
      } catch (e) {
        this.onDebug('socket failed: ' + e);
        this.ws = null;
        this.switchTransport();
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      this.transport = this.viaFallback ? 'sockjs' : 'websocket';
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        opened = true;
        if (ws !== this.ws) return;
        const headers = Object.assign(
          {
            'accept-version': '1.2',
            host: typeof location !== 'undefined' ? location.hostname : 'localhost',
            'heart-beat': this.heartbeat[0] + ',' + this.heartbeat[1],
          },
          this.connectHeaders,
        );
        this.write(encodeFrame('CONNECT', headers, ''));
      };
      ws.onmessage = (event) => {
        if (ws === this.ws) this.receive(event.data);
      };
      ws.onclose = (event) => {
        if (ws !== this.ws) return;
        this.onDebug('closed: ' + (event && event.code));
        if (!opened) this.switchTransport();
        this.lost();
      };
      ws.onerror = () => {};
      // A server that accepts the socket but never answers CONNECT is as good as down.
      this.timer = this.timers.setTimeout(() => {
        this.timer = null;
        if (ws === this.ws && !this.connected) this.drop('no CONNECTED in time', true);
      }, this.connectTimeout);
    }

    write(text) {
      if (!this.ws) return false;
      try {
        this.ws.send(text);
      } catch (e) {
        this.onDebug('send failed: ' + e);
        return false;
      }
      this.lastSent = this.timers.now();
      return true;
    }

    receive(data) {
      this.lastReceived = this.timers.now();
      let items;
      try {
        items = this.parser.push(data);
      } catch (e) {
        this.onDebug('protocol error: ' + e.message);
        this.drop(e.message, true);
        return;
      }
      for (const item of items) {
        if (item.type !== 'frame') continue;
        switch (item.command) {
          case 'CONNECTED':
            this.connectedFrame(item);
            break;
          case 'MESSAGE': {
            const sub = this.subscriptions.get(item.headers.subscription);
            if (sub) {
              try {
                sub.callback(item);
              } catch (e) {
                this.onDebug('subscriber threw: ' + e);
              }
            }
            break;
          }
          case 'RECEIPT':
            this.onReceipt(item);
            break;
          case 'ERROR':
            this.onStompError(item);
            break;
          default:
            this.onDebug('unexpected frame ' + item.command);
        }
        if (!this.ws) break; // a callback deactivated us
      }
    }

    connectedFrame(frame) {
      if (this.timer !== null) {
        this.timers.clearTimeout(this.timer);
        this.timer = null;
      }
      this.version = frame.headers.version || '1.0';
      this.attempt = 0;
      this.setState('connected');
      this.startHeartbeats(frame.headers['heart-beat']);
      for (const sub of this.subscriptions.values()) this.sendSubscribe(sub);
      try {
        this.onConnect(frame);
      } catch (e) {
        this.onDebug('onConnect threw: ' + e);
      }
    }

    sendSubscribe(sub) {
      this.write(
        encodeFrame('SUBSCRIBE', Object.assign({}, sub.headers, {
          id: sub.id,
          destination: sub.destination,
          ack: 'auto',
        }), ''),
      );
    }

    startHeartbeats(header) {
      const [sx, sy] = (header || '0,0').split(',').map((v) => Number(v) || 0);
      const [cx, cy] = this.heartbeat;
      const sendEvery = cx && sy ? Math.max(cx, sy) : 0;
      const expectEvery = sx && cy ? Math.max(sx, cy) : 0;
      if (sendEvery) {
        this.beats.push(this.timers.setInterval(() => {
          if (this.timers.now() - this.lastSent >= sendEvery / 2) this.write('\n');
        }, sendEvery / 2));
      }
      if (expectEvery) {
        this.beats.push(this.timers.setInterval(() => {
          if (this.timers.now() - this.lastReceived > expectEvery * 2) {
            this.drop('no heart-beat from the server', true);
          }
        }, expectEvery));
      }
    }

    clearTimers() {
      if (this.timer !== null) this.timers.clearTimeout(this.timer);
      this.timer = null;
      for (const id of this.beats) this.timers.clearInterval(id);
      this.beats = [];
    }

    /**
     * Abandons the socket now, without waiting for its close handshake (a dead TCP
     * connection can take minutes to report closing); with `reconnect`, retries.
     */
    drop(reason, reconnect) {
      const ws = this.ws;
      this.ws = null;
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close(1000, reason.slice(0, 100));
        } catch (e) {
          // already closing
        }
      }
      if (reconnect) this.lost();
    }

    lost() {
      this.ws = null;
      this.clearTimers();
      if (!this.active) {
        this.setState('idle');
        return;
      }
      this.scheduleReconnect();
    }

    scheduleReconnect() {
      const r = this.reconnect;
      const base = Math.min(r.max, r.initial * Math.pow(r.factor, this.attempt));
      const delay = Math.round(base * (0.5 + 0.5 * this.random()));
      this.attempt += 1;
      this.setState('reconnecting');
      this.onDebug('reconnecting in ' + delay + ' ms');
      this.timer = this.timers.setTimeout(() => {
        this.timer = null;
        if (this.active) this.open('reconnecting');
      }, delay);
    }
  }

  return { Client, FrameParser, encodeFrame, escapeHeader, unescapeHeader };
});
