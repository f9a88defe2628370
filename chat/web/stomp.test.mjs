// Tests of stomp.js: node --test chat/web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Client, FrameParser, encodeFrame, escapeHeader, unescapeHeader } = require('./stomp.js');

const frames = (items) => items.filter((i) => i.type === 'frame');
const bytes = (s) => new TextEncoder().encode(s);

test('one frame, headers and body', () => {
  const p = new FrameParser();
  const [f] = p.push('MESSAGE\ndestination:/topic/a\nsubscription:sub-1\n\nhello\0');
  assert.equal(f.command, 'MESSAGE');
  assert.deepEqual(f.headers, { destination: '/topic/a', subscription: 'sub-1' });
  assert.equal(f.body, 'hello');
});

test('frames batched in one message, heart-beats between them', () => {
  const p = new FrameParser();
  const items = p.push('\nRECEIPT\nreceipt-id:1\n\n\0\r\n\nMESSAGE\nsubscription:s\n\nb\0\n');
  assert.deepEqual(items.map((i) => i.type), ['heartbeat', 'frame', 'heartbeat', 'heartbeat', 'frame', 'heartbeat']);
  assert.deepEqual(frames(items).map((f) => f.command), ['RECEIPT', 'MESSAGE']);
});

test('a frame split across messages at every byte', () => {
  const text = 'MESSAGE\r\ndestination:/topic/ü\r\ncontent-length:8\r\n\r\nhé\0llo!\0\n';
  const all = bytes(text);
  for (let cut = 1; cut < all.length; cut++) {
    const p = new FrameParser();
    const got = [...p.push(all.slice(0, cut)), ...p.push(all.slice(cut))];
    const fs = frames(got);
    assert.equal(fs.length, 1, `cut at ${cut}`);
    assert.equal(fs[0].headers.destination, '/topic/ü');
    assert.equal(fs[0].body, 'hé\0llo!', 'content-length lets the body hold NUL');
    assert.equal(got[got.length - 1].type, 'heartbeat');
  }
});

test('binary messages are UTF-8, even split inside a character', () => {
  const all = bytes('MESSAGE\nsubscription:s\n\n日本語 ☕\0');
  const p = new FrameParser();
  const mid = all.indexOf(0xe6) + 1; // inside 日
  assert.deepEqual(p.push(all.slice(0, mid).buffer), []);
  const [f] = frames(p.push(all.slice(mid).buffer));
  assert.equal(f.body, '日本語 ☕');
  assert.deepEqual(Array.from(f.bytes), Array.from(bytes('日本語 ☕')));
});

test('header escapes, first repeated header wins, CONNECTED is not unescaped', () => {
  const p = new FrameParser();
  const [m, c] = frames(p.push(
    'MESSAGE\na\\cb:x\\ny\\\\z\\r\nk:1\nk:2\n\n\0CONNECTED\nversion:1.2\nserver:a\\cb\n\n\0',
  ));
  assert.equal(m.headers['a:b'], 'x\ny\\z\r');
  assert.equal(m.headers.k, '1');
  assert.equal(c.headers.server, 'a\\cb');
  assert.equal(unescapeHeader(escapeHeader('a:b\\c\nd\re')), 'a:b\\c\nd\re');
});

test('protocol errors throw', () => {
  assert.throws(() => new FrameParser().push('MESSAGE\ncontent-length:1\n\nab\0'), /NUL/);
  assert.throws(() => new FrameParser().push('lower\n\n\0'), /command/);
  assert.throws(() => new FrameParser().push('MESSAGE\nnocolon\n\n\0'), /header/);
  assert.throws(() => new FrameParser({ maxFrameBytes: 8 }).push('MESSAGE\nx:yyyyyyyy'), /larger/);
});

test('encodeFrame escapes headers except in CONNECT', () => {
  assert.equal(encodeFrame('SEND', { destination: '/a:b', n: undefined }, 'hi'), 'SEND\ndestination:/a\\cb\n\nhi\0');
  assert.equal(encodeFrame('CONNECT', { host: 'a:b' }, ''), 'CONNECT\nhost:a:b\n\n\0');
});

// --- the client, with a fake WebSocket and fake timers ---

function harness(options) {
  const sockets = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.closed = false;
      sockets.push(this);
    }
    send(data) { this.sent.push(data); }
    close() { this.closed = true; }
    // helpers
    open() { this.onopen && this.onopen(); }
    deliver(data) { this.onmessage && this.onmessage({ data }); }
    lose() { this.onclose && this.onclose({ code: 1006 }); }
  }
  let now = 0;
  let nextTimer = 1;
  const pending = new Map();
  const timers = {
    now: () => now,
    setTimeout: (f, ms) => { const id = nextTimer++; pending.set(id, { f, at: now + ms }); return id; },
    clearTimeout: (id) => pending.delete(id),
    setInterval: (f, ms) => { const id = nextTimer++; pending.set(id, { f, at: now + ms, every: ms }); return id; },
    clearInterval: (id) => pending.delete(id),
  };
  const advance = (ms) => {
    const end = now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of pending) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      const [id, t] = next;
      now = t.at;
      if (t.every) t.at += t.every; else pending.delete(id);
      t.f();
    }
    now = end;
  };
  const states = [];
  const client = new Client('ws://example.test/ws', Object.assign({
    WebSocket: FakeSocket,
    timers,
    random: () => 1,
    onStateChange: (s) => states.push(s),
  }, options));
  return { client, sockets, states, advance, last: () => sockets[sockets.length - 1] };
}

const parseSent = (socket) => frames(new FrameParser().push(socket.sent.filter((s) => s !== '\n').join('')));

test('connect, subscribe, send, receive', () => {
  const connects = [];
  const h = harness({ onConnect: (f) => connects.push(f.headers.version) });
  const got = [];
  h.client.subscribe('/topic/rooms.a', (m) => got.push(JSON.parse(m.body)));
  h.client.activate();
  assert.deepEqual(h.states, ['connecting']);
  const ws = h.last();
  assert.equal(ws.url, 'ws://example.test/ws');
  assert.deepEqual(ws.protocols, ['v12.stomp', 'v11.stomp', 'v10.stomp']);
  assert.equal(h.client.send('/app/x', 'early'), false, 'not connected yet');
  ws.open();
  const [connect] = parseSent(ws);
  assert.equal(connect.command, 'CONNECT');
  assert.equal(connect.headers['accept-version'], '1.2');
  assert.equal(connect.headers['heart-beat'], '10000,10000');
  ws.deliver('CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0');
  assert.deepEqual(h.states, ['connecting', 'connected']);
  assert.deepEqual(connects, ['1.2']);
  const sub = parseSent(ws)[1];
  assert.equal(sub.command, 'SUBSCRIBE');
  assert.equal(sub.headers.destination, '/topic/rooms.a');
  assert.ok(h.client.send('/app/chat.send', '{"message":"héllo"}', { 'content-type': 'application/json' }));
  const send = parseSent(ws)[2];
  assert.equal(send.command, 'SEND');
  assert.equal(send.headers.destination, '/app/chat.send');
  assert.equal(send.headers['content-type'], 'application/json');
  assert.equal(send.headers['content-length'], '20', 'bytes, not characters');
  assert.equal(send.body, '{"message":"héllo"}');
  ws.deliver(`MESSAGE\nsubscription:${sub.headers.id}\ndestination:/topic/rooms.a\n\n{"n":`);
  ws.deliver(new TextEncoder().encode('1}\0').buffer);
  assert.deepEqual(got, [{ n: 1 }]);
});

test('reconnects with backoff, resubscribes, reports states', () => {
  const connects = [];
  const h = harness({ onConnect: () => connects.push(h.client.state) });
  h.client.subscribe('/user/queue/history', () => {});
  h.client.activate();
  h.last().open();
  h.last().deliver('CONNECTED\nversion:1.2\n\n\0');
  h.last().lose();
  assert.equal(h.client.state, 'reconnecting');
  assert.equal(h.sockets.length, 1);
  h.advance(499);
  assert.equal(h.sockets.length, 1);
  h.advance(1);
  assert.equal(h.sockets.length, 2, 'first retry after 500 ms');
  h.last().lose(); // refused
  h.advance(999);
  assert.equal(h.sockets.length, 2);
  h.advance(1);
  assert.equal(h.sockets.length, 3, 'then 1 s');
  h.last().lose();
  h.advance(2000);
  assert.equal(h.sockets.length, 4, 'then 2 s');
  const ws = h.last();
  ws.open();
  ws.deliver('CONNECTED\nversion:1.2\n\n\0');
  assert.equal(h.client.state, 'connected');
  assert.deepEqual(parseSent(ws).map((f) => f.command), ['CONNECT', 'SUBSCRIBE']);
  assert.deepEqual(connects, ['connected', 'connected']);
  assert.deepEqual(h.states, ['connecting', 'connected', 'reconnecting', 'connected']);
  // Backoff starts over after a success.
  ws.lose();
  h.advance(500);
  assert.equal(h.sockets.length, 5);
});

test('backoff is capped', () => {
  const h = harness({ reconnect: { initial: 1000, max: 4000 } });
  h.client.activate();
  for (let i = 0; i < 6; i++) {
    h.last().lose();
    h.advance(4000);
  }
  assert.equal(h.sockets.length, 7);
});

test('missing heart-beats drop the connection; ours are sent', () => {
  const h = harness();
  h.client.activate();
  const ws = h.last();
  ws.open();
  ws.deliver('CONNECTED\nversion:1.2\nheart-beat:10000,10000\n\n\0');
  h.advance(10000);
  assert.ok(ws.sent.includes('\n'), 'a heart-beat EOL was sent');
  ws.deliver('\n');
  h.advance(15000);
  assert.equal(h.client.state, 'connected', 'the server beat in time');
  h.advance(15000);
  assert.equal(ws.closed, true, 'silent for more than twice the interval');
  assert.equal(h.client.state, 'reconnecting');
});

test('no CONNECTED in time is a failed attempt', () => {
  const h = harness({ connectTimeout: 5000 });
  h.client.activate();
  h.last().open();
  h.advance(5000);
  assert.equal(h.sockets[0].closed, true);
  assert.equal(h.client.state, 'reconnecting');
});

test('ERROR frames are reported; deactivate stops everything', () => {
  const errors = [];
  const h = harness({ onStompError: (f) => errors.push(f.headers.message) });
  const sub = h.client.subscribe('/topic/a', () => {});
  h.client.activate();
  const ws = h.last();
  ws.open();
  ws.deliver('CONNECTED\nversion:1.2\n\n\0ERROR\nmessage:bad thing\n\n\0');
  assert.deepEqual(errors, ['bad thing']);
  sub.unsubscribe();
  assert.equal(parseSent(ws).pop().command, 'UNSUBSCRIBE');
  h.client.deactivate();
  assert.equal(parseSent(ws).pop().command, 'DISCONNECT');
  assert.equal(ws.closed, true);
  assert.equal(h.client.state, 'idle');
  h.advance(60000);
  assert.equal(h.sockets.length, 1, 'no reconnect after deactivate');
});

test('a garbled stream reconnects', () => {
  const h = harness();
  h.client.activate();
  h.last().open();
  h.last().deliver('CONNECTED\nversion:1.2\n\n\0garbage\n\n\0');
  assert.equal(h.sockets[0].closed, true);
  assert.equal(h.client.state, 'reconnecting');
});
