// Tests of sockjs.js (the page's SockJS fallback) and of the STOMP client's switch to it:
// node --test chat/web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Socket, parseFrame, LineSplitter } = require('./sockjs.js');
const { Client } = require('./stomp.js');

test('frames: open, heart-beats, messages, close, and what is not a frame', () => {
  assert.deepEqual(parseFrame('o'), { type: 'open' });
  assert.deepEqual(parseFrame('h'), { type: 'heartbeat' });
  assert.deepEqual(parseFrame('h'.repeat(2048)), { type: 'heartbeat' });
  assert.deepEqual(parseFrame(''), { type: 'heartbeat' });
  assert.deepEqual(parseFrame('a["x","\\u0000\\u2028"]'), { type: 'messages', messages: ['x', '\u0000\u2028'] });
  assert.deepEqual(parseFrame('c[3000,"Go away!"]'), { type: 'close', code: 3000, reason: 'Go away!' });
  for (const bad of ['oo', 'a["x"', 'a{}', 'c[', 'x']) assert.equal(parseFrame(bad), null, bad);
});

test('lines split wherever the chunks fall', () => {
  const text = 'hhh\no\na["a\\nb"]\nc[3000,"bye"]\n';
  for (let cut = 0; cut <= text.length; cut++) {
    const s = new LineSplitter();
    const lines = [...s.push(text.slice(0, cut)), ...s.push(text.slice(cut))];
    assert.deepEqual(lines, ['hhh', 'o', 'a["a\\nb"]', 'c[3000,"bye"]'], `cut at ${cut}`);
  }
});

/** A fake fetch: answers receiving requests from a script of bodies, records sends. */
function fakeServer(bodies) {
  const sent = [];
  const queue = [...bodies];
  const waiting = [];
  const fetch = async (url, init) => {
    if (url.endsWith('/xhr_send')) {
      sent.push(JSON.parse(init.body));
      return { status: 204, text: async () => '' };
    }
    const next = queue.shift();
    if (next === undefined) {
      // Hang until aborted, like a poll the server holds.
      return new Promise((_, reject) => {
        waiting.push(reject);
        init.signal?.addEventListener('abort', () => reject(new Error('aborted')));
      });
    }
    const chunks = Array.isArray(next) ? next : [next];
    const body = new ReadableStream({
      start(controller) {
        for (const c of chunks) controller.enqueue(new TextEncoder().encode(c));
        controller.close();
      },
    });
    return { status: 200, body, text: async () => chunks.join('') };
  };
  return { fetch, sent };
}

function events(sock) {
  const log = [];
  return new Promise((resolve) => {
    sock.onopen = () => log.push('open');
    sock.onmessage = (e) => log.push('message ' + e.data);
    sock.onerror = () => log.push('error');
    sock.onclose = (e) => {
      log.push(`close ${e.code} ${e.reason}`);
      resolve(log);
    };
  });
}

test('a streaming session: prelude, open, messages across chunks, sends batched, close', async () => {
  const server = fakeServer([
    ['h'.repeat(2048) + '\no', '\na["one","tw', 'o"]\n'],
    ['h'.repeat(2048) + '\n', 'a["three"]\nc[3000,"Go away!"]\n'],
  ]);
  const sock = new Socket('http://x/sockjs', null, { fetch: server.fetch, streaming: true, random: () => 0.5 });
  assert.match(sock.base, /^http:\/\/x\/sockjs\/500\/[0-9a-z]{16}$/);
  const done = events(sock);
  assert.throws(() => sock.send('too early'));
  const log = await done;
  assert.deepEqual(log, ['open', 'message one', 'message two', 'message three', 'close 3000 Go away!']);
  assert.equal(sock.readyState, Socket.CLOSED);
});

test('polling, sending, and a broken frame closing with 1002', async () => {
  const server = fakeServer(['o\n', 'a["x"]\n', 'a[broken\n']);
  const sock = new Socket('http://x/sockjs', null, { fetch: server.fetch, streaming: false });
  const done = events(sock);
  sock.onopen = () => {
    sock.send('hello');
    sock.send('world');
  };
  const log = await done;
  assert.deepEqual(log.slice(-2), ['error', 'close 1002 broken SockJS frame']);
  assert.ok(log.includes('message x'));
  assert.deepEqual(server.sent.flat(), ['hello', 'world']);
});

/** A WebSocket that never opens: it closes at once (an upgrade a proxy refused). */
class BlockedWebSocket {
  constructor() {
    BlockedWebSocket.made += 1;
    setTimeout(() => this.onclose && this.onclose({ code: 1006 }), 0);
  }
  send() {}
  close() {}
}
BlockedWebSocket.made = 0;

test('the STOMP client falls back when a WebSocket never opens, and keeps what works', async () => {
  const made = [];
  class Fallback {
    constructor(url) {
      made.push(url);
      this.readyState = 0;
      setTimeout(() => this.onopen && this.onopen(), 0);
    }
    send(text) {
      if (text.startsWith('CONNECT')) {
        setTimeout(() => this.onmessage({ data: 'CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0' }), 0);
      }
    }
    close() {}
  }
  const states = [];
  const client = new Client('ws://x/ws', {
    WebSocket: BlockedWebSocket,
    fallback: { url: 'http://x/sockjs', Socket: Fallback },
    reconnect: { initial: 1, max: 5 },
    onStateChange: (s) => states.push(s),
  });
  await new Promise((resolve) => {
    client.onConnect = resolve;
    client.activate();
  });
  assert.equal(BlockedWebSocket.made, 1, 'one WebSocket attempt');
  assert.deepEqual(made, ['http://x/sockjs']);
  assert.equal(client.transport, 'sockjs');
  client.deactivate();
});

test('without any WebSocket the fallback is used from the start', () => {
  const client = new Client('ws://x/ws', { fallback: { url: 'http://x/sockjs', Socket: class {} } });
  assert.equal(client.viaFallback, typeof WebSocket === 'undefined');
  const withWs = new Client('ws://x/ws', {
    WebSocket: BlockedWebSocket,
    fallback: { url: 'http://x/sockjs', Socket: class {} },
  });
  assert.equal(withWs.viaFallback, false, 'a WebSocket is tried first');
});
