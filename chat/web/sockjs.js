/*
 * sockjs.js — a small SockJS (protocol 0.3) client for Sockeye Chat's fallback: an object with
 * the WebSocket API (readyState, send, close, onopen, onmessage, onclose, onerror) that talks
 * to a SockJS service over HTTP, for browsers whose WebSocket upgrade is blocked (proxies,
 * old load balancers) or who have no WebSocket at all.
 *
 *   const sock = new SockeyeSockJS.Socket('https://host/sockjs');
 *   sock.onmessage = (event) => console.log(event.data);
 *
 * Receiving: `xhr_streaming` (a POST whose response body is read as it arrives, with fetch's
 * streams), reopened whenever the server ends it at its streaming limit; where response
 * streams are missing, `xhr` polling. Sending: `xhr_send`, one request at a time, each with
 * everything queued since the last one (a JSON array of strings). Frames: `o` opens, `h` is a
 * heart-beat, `a[...]` carries messages, `c[code,"reason"]` closes.
 *
 * Works as a classic <script> (defines `SockeyeSockJS`) and as a CommonJS module (for tests).
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === 'object' && module.exports) {
    module.exports = api;
  } else {
    root.SockeyeSockJS = api;
  }
})(typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  const CONNECTING = 0;
  const OPEN = 1;
  const CLOSING = 2;
  const CLOSED = 3;

  /** A session id: 16 characters of [a-z0-9]. */
  function sessionId(random) {
    let id = '';
    for (let i = 0; i < 16; i++) id += Math.floor(random() * 36).toString(36);
    return id;
  }

  /**
   * Splits a response body as it arrives into frames (one per line). `push(text)` returns the
   * complete lines so far; the prelude of `h`s and empty lines are heart-beats.
   */
  class LineSplitter {
    constructor() {
      this.rest = '';
    }

    push(text) {
      const lines = (this.rest + text).split('\n');
      this.rest = lines.pop();
      return lines;
    }
  }

  /**
   * What a frame means: `{ type: 'open' | 'heartbeat' | 'messages' | 'close', ... }`, or
   * `null` for a frame that is not one (the caller closes with 1002).
   */
  function parseFrame(line) {
    if (line === '' || /^h+$/.test(line)) return { type: 'heartbeat' };
    switch (line[0]) {
      case 'o':
        return line === 'o' ? { type: 'open' } : null;
      case 'a': {
        let list;
        try {
          list = JSON.parse(line.slice(1));
        } catch (e) {
          return null;
        }
        if (!Array.isArray(list)) return null;
        return { type: 'messages', messages: list.map(String) };
      }
      case 'c': {
        let pair;
        try {
          pair = JSON.parse(line.slice(1));
        } catch (e) {
          return null;
        }
        if (!Array.isArray(pair)) return null;
        return { type: 'close', code: Number(pair[0]) || 1006, reason: String(pair[1] || '') };
      }
      default:
        return null;
    }
  }

  class Socket {
    /**
     * `url`: the SockJS service (http or https, no trailing slash). Options, for tests:
     * `fetch`, `random`, `streaming` (false forces polling).
     */
    constructor(url, protocols, options) {
      const o = options || {};
      this.url = String(url).replace(/\/+$/, '');
      this.protocol = '';
      this.binaryType = 'blob';
      this.readyState = CONNECTING;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      this.fetch = o.fetch || ((...args) => fetch(...args));
      const random = o.random || Math.random;
      this.base = this.url + '/' + String(Math.floor(random() * 1000)).padStart(3, '0') + '/' + sessionId(random);
      this.streaming = o.streaming !== undefined
        ? o.streaming
        : typeof ReadableStream !== 'undefined' && typeof TextDecoder !== 'undefined';
      this.outbox = [];
      this.sending = false;
      this.abort = typeof AbortController !== 'undefined' ? new AbortController() : null;
      this.receive();
    }

    get bufferedAmount() {
      return this.outbox.reduce((n, m) => n + m.length, 0);
    }

    send(data) {
      if (this.readyState === CONNECTING) throw new Error('InvalidStateError: not open yet');
      if (this.readyState !== OPEN) return;
      this.outbox.push(String(data));
      this.flushOutbox();
    }

    close(code, reason) {
      if (this.readyState >= CLOSING) return;
      this.finish(code || 1000, reason || '', true);
    }

    // --- internals ---

    request() {
      const init = { method: 'POST', cache: 'no-store', credentials: 'include' };
      if (this.abort) init.signal = this.abort.signal;
      return init;
    }

    async flushOutbox() {
      if (this.sending || this.outbox.length === 0 || this.readyState !== OPEN) return;
      this.sending = true;
      const batch = this.outbox.splice(0);
      try {
        const init = this.request();
        init.headers = { 'Content-Type': 'text/plain;charset=UTF-8' };
        init.body = JSON.stringify(batch);
        const res = await this.fetch(this.base + '/xhr_send', init);
        if (res.status !== 204 && res.status !== 200) {
          this.fail(1006, 'xhr_send answered ' + res.status);
          return;
        }
      } catch (e) {
        this.fail(1006, 'xhr_send failed: ' + e);
        return;
      } finally {
        this.sending = false;
      }
      this.flushOutbox();
    }

    async receive() {
      while (this.readyState < CLOSING) {
        try {
          if (this.streaming) await this.stream();
          else await this.poll();
        } catch (e) {
          this.fail(1006, 'receiving failed: ' + e);
          return;
        }
      }
    }

    /** One `xhr_streaming` response, read to its end. */
    async stream() {
      const res = await this.fetch(this.base + '/xhr_streaming', this.request());
      if (res.status !== 200 || !res.body) throw new Error('xhr_streaming answered ' + res.status);
      const reader = res.body.getReader();
      const decoder = new TextDecoder('utf-8');
      const lines = new LineSplitter();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const line of lines.push(decoder.decode(value, { stream: true }))) {
          this.frame(line);
          if (this.readyState >= CLOSING) {
            reader.cancel().catch(() => {});
            return;
          }
        }
      }
    }

    /** One `xhr` poll. */
    async poll() {
      const res = await this.fetch(this.base + '/xhr', this.request());
      if (res.status !== 200) throw new Error('xhr answered ' + res.status);
      const text = await res.text();
      for (const line of text.split('\n')) {
        if (this.readyState >= CLOSING) return;
        this.frame(line);
      }
    }

    frame(line) {
      const f = parseFrame(line);
      if (f === null) {
        this.fail(1002, 'broken SockJS frame');
        return;
      }
      switch (f.type) {
        case 'open':
          if (this.readyState !== CONNECTING) return;
          this.readyState = OPEN;
          this.emit('onopen', { type: 'open' });
          this.flushOutbox();
          break;
        case 'messages':
          for (const data of f.messages) {
            if (this.readyState !== OPEN) break;
            this.emit('onmessage', { type: 'message', data });
          }
          break;
        case 'close':
          this.finish(f.code, f.reason, f.code === 1000 || f.code === 3000);
          break;
        default: // heart-beat
      }
    }

    fail(code, reason) {
      if (this.readyState >= CLOSING) return;
      this.emit('onerror', { type: 'error' });
      this.finish(code, reason, false);
    }

    finish(code, reason, wasClean) {
      if (this.readyState === CLOSED) return;
      this.readyState = CLOSED;
      if (this.abort) this.abort.abort();
      this.emit('onclose', { type: 'close', code, reason, wasClean });
    }

    emit(handler, event) {
      const f = this[handler];
      if (typeof f === 'function') f.call(this, event);
    }
  }

  Socket.CONNECTING = CONNECTING;
  Socket.OPEN = OPEN;
  Socket.CLOSING = CLOSING;
  Socket.CLOSED = CLOSED;

  return { Socket, parseFrame, LineSplitter };
});
