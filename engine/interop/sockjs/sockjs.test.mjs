// Interop: the engine's SockJS 0.3 server (examples/sockjs_test_server) with the real client,
// sockjs-client 1.6.1 in node, forced onto each transport that works outside a browser
// (websocket, xhr-streaming, xhr-polling, eventsource), plus raw HTTP where the client would
// hide what the server did. Run by run.sh against a running test server: SOCKJS_URL
// (http://127.0.0.1:PORT). Every wait is bounded and names what it waited for.

import { test, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import SockJS from 'sockjs-client';

if (!process.env.SOCKJS_URL) throw new Error('no server to test (SOCKJS_URL unset): run engine/interop/sockjs/run.sh');
const BASE = process.env.SOCKJS_URL.replace(/\/+$/, '');
const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
const HTTP_TRANSPORTS = TRANSPORTS.filter((t) => t !== 'websocket');
const WAIT = 5000; // ms, for anything that should happen at once
const TEST = { timeout: 30000 };
const DISCONNECT_DELAY = 5000; // the test server's
const HEARTBEAT = 25000; // the test server's (not configurable there)

// Engine bugs these tests found, open when they were written. The tests stay strict; with
// SOCKJS_KNOWN_BUGS=todo they are reported as TODO instead (and do not fail the run).
const BUG = {
  BODY_CAP: 'xhr_send bodies are capped at max_http_body (64 KiB): 413, and sockjs-client closes with 1006',
  PERCENT: "eventsource frames do not escape '%' as %25; sockjs-client decodeURI()s each event",
  WS_HEARTBEAT: "no 'h' frames on the WebSocket transport (only WebSocket pings, every 30 s)",
};
const known = (bug, applies = true) => (applies && process.env.SOCKJS_KNOWN_BUGS === 'todo' ? { todo: `engine: ${bug}` } : {});

const uid = () => randomUUID().replaceAll('-', '').slice(0, 12);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Things that arrive, taken in order with a bounded wait. */
class Inbox {
  constructor() {
    this.items = [];
    this.waiters = [];
  }
  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }
  next(what = 'a message', ms = WAIT) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    let waiter;
    const got = new Promise((resolve) => {
      waiter = resolve;
      this.waiters.push(waiter);
    });
    return within(got, ms, what).catch((e) => {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      throw e;
    });
  }
  /** The next `n` items; the wait is bounded as a whole, and says how many came. */
  async take(n, what, ms = WAIT) {
    const deadline = Date.now() + ms;
    const got = [];
    while (got.length < n) {
      try {
        got.push(await this.next(what, Math.max(1, deadline - Date.now())));
      } catch {
        throw new Error(`timed out after ${ms} ms waiting for ${what}: ${got.length} of ${n} arrived`);
      }
    }
    return got;
  }
}

const cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup();
    } catch {
      // already gone
    }
  }
});

/** A string for messages: long ones are shown by length and a window around `at`. */
function show(text, at = 0) {
  if (typeof text !== 'string') return String(text);
  if (text.length <= 80) return JSON.stringify(text);
  const from = Math.max(0, at - 20);
  return `(${text.length} UTF-16 units) …${JSON.stringify(text.slice(from, from + 60))}… at ${from}`;
}

/** assert.equal for strings that may be huge: the failure names the first difference. */
function sameText(actual, expected, label) {
  if (actual === expected) return;
  if (typeof actual !== 'string') assert.fail(`${label}: got ${typeof actual} ${show(actual)}, want ${show(expected)}`);
  let i = 0;
  while (i < actual.length && i < expected.length && actual[i] === expected[i]) i += 1;
  const unit = (s) => (i < s.length ? `U+${s.charCodeAt(i).toString(16).padStart(4, '0')}` : 'the end');
  assert.fail(`${label}: first difference at UTF-16 index ${i}: got ${unit(actual)}, want ${unit(expected)}; `
    + `got ${show(actual, i)}, want ${show(expected, i)}`);
}

function sameSequence(actual, expected, label) {
  for (let i = 0; i < Math.min(actual.length, expected.length); i += 1) sameText(actual[i], expected[i], `${label}, message ${i}`);
  assert.equal(actual.length, expected.length, `${label}: message count`);
}

/**
 * A sockjs-client socket on `service`, forced onto `transports` (all of them when null),
 * opened. `s.messages` holds what arrives, `s.closed` resolves with the close event's
 * { code, reason, wasClean }, `s.heartbeats` counts heart-beat frames.
 */
async function openSock(service, transports, { wait = WAIT } = {}) {
  const sock = new SockJS(`${BASE}${service}`, null, transports ? { transports } : {});
  const s = { sock, messages: new Inbox(), heartbeats: 0, opened: false };
  s.closed = new Promise((resolve) => sock.addEventListener('close', (e) => {
    resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
  }));
  sock.addEventListener('message', (e) => s.messages.push(e.data));
  sock.addEventListener('heartbeat', () => (s.heartbeats += 1));
  cleanups.push(() => close(s));
  const what = `open on ${service} over ${transports ? transports.join(',') : 'any transport'}`;
  await within(new Promise((resolve, reject) => {
    sock.addEventListener('open', () => {
      s.opened = true;
      s.transport = sock.transport;
      resolve();
    });
    s.closed.then((c) => reject(new Error(`closed before open (${what}): ${c.code} ${c.reason}`)));
  }), wait, what);
  if (transports && transports.length === 1) assert.equal(sock.transport, transports[0], 'sock.transport');
  return s;
}

/**
 * The next `n` messages on `s`, within `ms` in all; fails at once, naming the close event and
 * how many had arrived, if `s` closes first.
 */
async function receive(s, n, what, ms = WAIT) {
  const deadline = Date.now() + ms;
  const got = [];
  while (got.length < n) {
    const early = s.closed.then((c) => {
      throw new Error(`the session closed (${c.code} ${JSON.stringify(c.reason)}) while waiting for ${what}: `
        + `${got.length} of ${n} arrived`);
    });
    early.catch(() => {});
    try {
      got.push(await Promise.race([s.messages.next(what, Math.max(1, deadline - Date.now())), early]));
    } catch (e) {
      if (e.message.startsWith('the session closed')) throw e;
      throw new Error(`timed out after ${ms} ms waiting for ${what}: ${got.length} of ${n} arrived`);
    }
  }
  return got;
}

/** Closes `s` (if still open) and waits for its close event. */
async function close(s) {
  if (s.sock.readyState === SockJS.CONNECTING || s.sock.readyState === SockJS.OPEN) s.sock.close();
  return within(s.closed, WAIT, 'the close event');
}

// --- test data --------------------------------------------------------------------------------

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String.fromCharCode(from + i)).join('');

/** Every character the SockJS protocol says the server escapes, plus JSON's own and some more. */
const ESCAPED = [
  range(0x0000, 0x001f),
  range(0x200c, 0x200f),
  range(0x2028, 0x202f),
  range(0x2060, 0x206f),
  range(0xfff0, 0xffff),
  '"\\\'/"\\\\"', // quotes and backslashes, doubled up too
  '\u{1F600}\u{1D11E}\u{10000}\u{10FFFF}', // non-BMP: surrogate pairs in UTF-16
  range(0x0300, 0x0333), // what sockjs-client escapes on its side (Chrome's mangling)
  'é✓ü€',
  '\\u0041\\n', // escape sequences as text: must arrive as these characters
  ']["', // would break a careless framing
].join('');

/** Every Basic Multilingual Plane character but the surrogates (189 KiB in UTF-8). */
const ALL_BMP = range(0x0000, 0xd7ff) + range(0xe000, 0xffff);

/** A 64 KiB (65,536 UTF-16 units) message, different for each `n`, mostly ASCII. */
function big(n) {
  const head = `big-${n}:`;
  const unit = `${n} abcdefghijklmnopqrstuvwxyz é\u2028"\\ `;
  return (head + unit.repeat(Math.ceil(65536 / unit.length))).slice(0, 65536);
}

/** The 1,000 messages of the echo test: numbered ones, and every 100th the escaped characters. */
function echoMessages(tag) {
  return Array.from({ length: 1000 }, (_, i) => (i % 100 === 50 ? `${i}:${ESCAPED}` : `${tag} ${i}`));
}

// --- heart-beats, watched in the background ---------------------------------------------------

// The test server sends a heart-beat frame after 25 s without other frames, which cannot be
// changed there. Rather than wait 25 s in a test, one session per transport is opened now and
// left idle while the other tests run; the last tests check that each saw a heart-beat (and is
// still alive and echoing), waiting at most for what is left of 25 s + 5 s. (xhr-streaming's
// prelude, 2,048 'h's, also reads as a heart-beat to sockjs-client: only beats after 24 s count.)
const heartbeatWatch = new Map(TRANSPORTS.map((transport) => {
  const started = Date.now();
  const sock = new SockJS(`${BASE}/echo`, null, { transports: [transport] });
  const w = { transport, started, sock, beats: [], closed: null, messages: new Inbox(), opened: null };
  w.beat = new Promise((resolve) => sock.addEventListener('heartbeat', () => {
    const at = Date.now() - started;
    w.beats.push(at);
    if (at >= HEARTBEAT - 1000) resolve(at);
  }));
  w.open = new Promise((resolve) => sock.addEventListener('open', () => {
    w.opened = sock.transport;
    resolve();
  }));
  sock.addEventListener('message', (e) => w.messages.push(e.data));
  sock.addEventListener('close', (e) => (w.closed = { code: e.code, reason: e.reason }));
  return [transport, w];
}));
after(() => {
  for (const w of heartbeatWatch.values()) if (w.sock.readyState <= SockJS.OPEN) w.sock.close();
});

// A raw xhr-polling session for the same purpose: its second poll is held until the
// heart-beat frame, which must be exactly "h\n".
const rawHeartbeat = (async () => {
  const url = `${BASE}/echo/000/${uid()}`;
  const first = await post(`${url}/xhr`);
  const started = Date.now();
  const second = await post(`${url}/xhr`, undefined, HEARTBEAT + 5000);
  return { first, second, after: Date.now() - started };
})().catch((e) => ({ error: e }));

// --- raw HTTP --------------------------------------------------------------------------------

/** A POST with a bounded wait: { status, headers, body }. */
async function post(url, body, ms = WAIT, headers = {}) {
  const r = await within(
    fetch(url, { method: 'POST', body, headers, signal: AbortSignal.timeout(ms + 1000) }),
    ms, `the response to POST ${url.slice(BASE.length)}`,
  );
  const text = await within(r.text(), ms, `the body of POST ${url.slice(BASE.length)}`);
  return { status: r.status, headers: r.headers, body: text };
}

/** The status a WebSocket upgrade request to `path` gets (101 when it is accepted). */
function upgradeStatus(path) {
  const { hostname, port } = new URL(BASE);
  return within(new Promise((resolve, reject) => {
    const req = http.request({
      hostname, port, path, agent: false,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'x3JJHMbDL1EzLkh9GBhXDw==' },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  }), WAIT, `the answer to an upgrade of ${path}`);
}

// --- every node transport ------------------------------------------------------------------

for (const transport of TRANSPORTS) {
  test(`${transport}: opens, and echoes 1,000 messages in order, with every escaped character`, TEST, async () => {
    const s = await openSock('/echo', [transport]);
    const messages = echoMessages(transport);
    for (const m of messages) s.sock.send(m);
    const got = await receive(s, messages.length, `1,000 echoes over ${transport}`, 15000);
    sameSequence(got, messages, `echo over ${transport}`);
    assert.equal(s.sock.transport, transport, 'still on the forced transport');
    assert.equal(s.sock.readyState, SockJS.OPEN);
  });

  const overHttp = transport !== 'websocket';
  test(`${transport}: echoes 64 KiB messages, and one with all of the BMP (189 KiB of UTF-8)`, { ...TEST, ...known(BUG.BODY_CAP, overHttp) }, async () => {
    const s = await openSock('/echo', [transport]);
    const messages = [big(0), 'between', big(1), ALL_BMP, big(2), 'last'];
    for (const m of messages) s.sock.send(m);
    sameSequence(await receive(s, messages.length, `the big echoes over ${transport}`, 15000), messages, `big echo over ${transport}`);
  });

  test(`${transport}: echoes every BMP character but '%', in 4,096-character pieces sent one at a time`, TEST, async () => {
    // '%' has a test of its own (below); here it would hide what else might go wrong.
    const text = ALL_BMP.replace('%', '');
    const s = await openSock('/echo', [transport]);
    for (let at = 0; at < text.length; at += 4096) {
      const piece = text.slice(at, at + 4096);
      s.sock.send(piece);
      const [echo] = await receive(s, 1, `the echo of BMP characters ${at} to ${at + piece.length - 1} over ${transport}`);
      sameText(echo, piece, `BMP piece at ${at}`);
    }
  });

  test(`${transport}: messages with '%' echo unchanged`, { ...TEST, ...known(BUG.PERCENT, transport === 'eventsource') }, async () => {
    // sockjs-client's eventsource receiver decodeURI()s each event's data, so the server must
    // send '%' there as %25 (sockjs-node escapes '%', CR, LF and NUL in eventsource frames).
    const s = await openSock('/echo', [transport]);
    for (const m of ['100%25 and %41 and %E2%9C%93', '%%', '50% off', '%']) {
      s.sock.send(m);
      const [echo] = await receive(s, 1, `the echo of ${JSON.stringify(m)} over ${transport}`);
      assert.equal(echo, m);
    }
  });

  test(`${transport}: a burst of 1,000 messages of 100 B (over HTTP, sockjs-client batches them into one send)`, { ...TEST, ...known(BUG.BODY_CAP, overHttp) }, async () => {
    const s = await openSock('/echo', [transport]);
    const messages = Array.from({ length: 1000 }, (_, i) => `${String(i).padStart(4, '0')} ${'b'.repeat(95)}`);
    for (const m of messages) s.sock.send(m);
    sameSequence(await receive(s, messages.length, `the burst's echoes over ${transport}`, 15000), messages, `burst over ${transport}`);
  });

  test(`${transport}: /close closes the session with 3000 "Go away!"`, TEST, async () => {
    const sock = new SockJS(`${BASE}/close`, null, { transports: [transport] });
    let openedOn = null;
    sock.addEventListener('open', () => (openedOn = sock.transport));
    const closed = await within(new Promise((resolve) => sock.addEventListener('close', resolve)), WAIT, 'the close from /close');
    assert.equal(openedOn, transport, 'the session opened (over the forced transport) before it was closed');
    assert.equal(closed.code, 3000);
    assert.equal(closed.reason, 'Go away!');
    assert.equal(closed.wasClean, true);
  });

  test(`${transport}: a client close gives 1000; a custom code is kept`, TEST, async () => {
    const s = await openSock('/echo', [transport]);
    s.sock.send('before close');
    assert.equal(await s.messages.next('the echo before close'), 'before close');
    s.sock.close();
    const c = await within(s.closed, WAIT, 'the close event');
    assert.equal(c.code, 1000);
    assert.equal(c.reason, 'Normal closure');
    const t = await openSock('/echo', [transport]);
    t.sock.close(3001, 'custom');
    const d = await within(t.closed, WAIT, 'the close event');
    assert.deepEqual([d.code, d.reason], [3001, 'custom']);
    // The server is fine afterwards: a new session on the same transport echoes.
    const u = await openSock('/echo', [transport]);
    u.sock.send('after');
    assert.equal(await u.messages.next('an echo after the closes'), 'after');
  });

  test(`${transport}: two concurrent sessions each get only their own messages`, TEST, async () => {
    const a = await openSock('/echo', [transport]);
    const b = await openSock('/echo', [transport]);
    const mine = (tag) => Array.from({ length: 200 }, (_, i) => `${tag}-${i}`);
    for (let i = 0; i < 200; i += 1) {
      a.sock.send(`a-${i}`);
      b.sock.send(`b-${i}`);
    }
    sameSequence(await receive(a, 200, `a's 200 echoes over ${transport}`), mine('a'), 'session a');
    sameSequence(await receive(b, 200, `b's 200 echoes over ${transport}`), mine('b'), 'session b');
    // Nothing more comes: a.messages and b.messages hold nothing of the other's.
    a.sock.send('a-end');
    b.sock.send('b-end');
    assert.equal(await a.messages.next("a's last echo"), 'a-end');
    assert.equal(await b.messages.next("b's last echo"), 'b-end');
    assert.equal(a.messages.items.length + b.messages.items.length, 0);
  });

  if (transport !== 'websocket') {
    test(`${transport}: /cookie_needed_echo echoes`, TEST, async () => {
      const s = await openSock('/cookie_needed_echo', [transport]);
      const messages = ['one', ESCAPED, 'x'.repeat(20000), 'three'];
      for (const m of messages) s.sock.send(m);
      sameSequence(await receive(s, messages.length, `echoes over ${transport}`), messages, 'cookie_needed_echo');
    });

    test(`${transport}: /disabled_websocket_echo echoes when forced onto ${transport}`, TEST, async () => {
      const s = await openSock('/disabled_websocket_echo', [transport]);
      s.sock.send(ESCAPED);
      sameText(await s.messages.next('the echo'), ESCAPED, 'echo');
    });
  }
}

test('20 concurrent sessions, 5 on each transport, each echo 100 messages of their own, in order', TEST, async () => {
  const socks = await Promise.all(TRANSPORTS.flatMap((t) => Array.from({ length: 5 }, () => openSock('/echo', [t]))));
  socks.forEach((s, n) => {
    for (let i = 0; i < 100; i += 1) s.sock.send(`${n}:${i}`);
  });
  await Promise.all(socks.map(async (s, n) => {
    const want = Array.from({ length: 100 }, (_, i) => `${n}:${i}`);
    sameSequence(await receive(s, 100, `session ${n}'s (${s.transport}) 100 echoes`, 10000), want, `session ${n} (${s.transport})`);
  }));
  for (const s of socks) assert.equal(s.messages.items.length, 0, `nothing more at ${s.transport}`);
});

// --- /disabled_websocket_echo ---------------------------------------------------------------

test('/disabled_websocket_echo: with every transport allowed, the client falls back from websocket and echoes', TEST, async () => {
  const info = await (await within(fetch(`${BASE}/disabled_websocket_echo/info`, { signal: AbortSignal.timeout(WAIT) }), WAIT, '/info')).json();
  assert.equal(info.websocket, false);
  const s = await openSock('/disabled_websocket_echo', null);
  assert.ok(HTTP_TRANSPORTS.includes(s.transport), `fell back to ${s.transport}`);
  const messages = ['x', ESCAPED, 'y'.repeat(20000)];
  for (const m of messages) s.sock.send(m);
  sameSequence(await s.messages.take(messages.length, `echoes over ${s.transport}`), messages, 'fallback echo');
});

test('/disabled_websocket_echo: forced onto websocket alone, the client gives up (2000), and a raw upgrade gets 404', TEST, async () => {
  const sock = new SockJS(`${BASE}/disabled_websocket_echo`, null, { transports: ['websocket'] });
  const closed = await within(new Promise((resolve) => sock.addEventListener('close', resolve)), WAIT, 'the close');
  assert.deepEqual([closed.code, closed.reason], [2000, 'All transports failed']);
  const status = await upgradeStatus(`/disabled_websocket_echo/000/${uid()}/websocket`);
  assert.equal(status, 404);
  assert.equal(await upgradeStatus(`/echo/000/${uid()}/websocket`), 101, 'the same upgrade on /echo');
});

test('/cookie_needed_echo: /info says so; JSESSIONID is set (dummy, or the one sent)', TEST, async () => {
  const info = await (await within(fetch(`${BASE}/cookie_needed_echo/info`, { signal: AbortSignal.timeout(WAIT) }), WAIT, '/info')).json();
  assert.equal(info.cookie_needed, true);
  const a = await post(`${BASE}/cookie_needed_echo/000/${uid()}/xhr`);
  assert.equal(a.body, 'o\n');
  assert.equal(a.headers.get('set-cookie'), 'JSESSIONID=dummy; path=/');
  const b = await post(`${BASE}/cookie_needed_echo/000/${uid()}/xhr`, undefined, WAIT, { cookie: 'JSESSIONID=abcdef' });
  assert.equal(b.body, 'o\n');
  assert.equal(b.headers.get('set-cookie'), 'JSESSIONID=abcdef; path=/');
  const plain = await post(`${BASE}/echo/000/${uid()}/xhr`);
  assert.equal(plain.headers.get('set-cookie'), null, '/echo sets no cookie');
});

// --- the disconnect delay ---------------------------------------------------------------------

test('a session without a receiving request is gone after the 5 s disconnect delay (xhr_send: 404)', TEST, async () => {
  const url = `${BASE}/echo/000/${uid()}`;
  assert.equal((await post(`${url}/xhr`)).body, 'o\n');
  // Alive while within the delay: a send is taken (204), and a poll returns the echo.
  const sent = await post(`${url}/xhr_send`, '["ping"]');
  assert.equal(sent.status, 204, `xhr_send within the delay: ${sent.status} ${sent.body}`);
  assert.equal((await post(`${url}/xhr`)).body, 'a["ping"]\n');
  const left = Date.now();
  await sleep(DISCONNECT_DELAY + 1500);
  const late = await post(`${url}/xhr_send`, '["too late"]');
  assert.equal(late.status, 404, `xhr_send ${Date.now() - left} ms after the last poll: ${late.status} ${JSON.stringify(late.body)}`);
  // A poll on the same id now opens a new session.
  assert.equal((await post(`${url}/xhr`)).body, 'o\n');
});

test('xhr_send takes a body over 64 KiB (sockjs-client batches what is sent while a send is in flight)', { ...TEST, ...known(BUG.BODY_CAP) }, async () => {
  const url = `${BASE}/echo/000/${uid()}`;
  assert.equal((await post(`${url}/xhr`)).body, 'o\n');
  const messages = Array.from({ length: 1000 }, (_, i) => `${i} ${'b'.repeat(100)}`);
  const body = JSON.stringify(messages); // 106,891 bytes
  const sent = await post(`${url}/xhr_send`, body);
  assert.equal(sent.status, 204, `xhr_send of ${body.length} bytes: ${sent.status} ${JSON.stringify(sent.body.slice(0, 100))}`);
  const echoed = [];
  for (let polls = 0; echoed.length < messages.length && polls < 20; polls += 1) {
    const poll = await post(`${url}/xhr`);
    assert.match(poll.body, /^a\[.*\]\n$/s, 'a poll answered with messages');
    echoed.push(...JSON.parse(poll.body.slice(1)));
  }
  sameSequence(echoed, messages, 'the echoes of the big xhr_send');
});

test('xhr_send to a session that never existed: 404', TEST, async () => {
  const r = await post(`${BASE}/echo/000/${uid()}/xhr_send`, '["x"]');
  assert.equal(r.status, 404);
});

test('a second receiver on a session is refused with c[2010,"Another connection still open"]', TEST, async () => {
  const url = `${BASE}/echo/000/${uid()}`;
  assert.equal((await post(`${url}/xhr`)).body, 'o\n');
  const held = fetch(`${url}/xhr`, { method: 'POST', signal: AbortSignal.timeout(HEARTBEAT + 5000) }).catch(() => null);
  await sleep(200); // let the first poll be taken
  const second = await post(`${url}/xhr`);
  assert.equal(second.body, 'c[2010,"Another connection still open"]\n');
  // The held poll still gets the session's messages.
  assert.equal((await post(`${url}/xhr_send`, '["for the held poll"]')).status, 204);
  const r = await within(held, WAIT, 'the held poll');
  assert.ok(r, 'the held poll failed');
  assert.equal(await within(r.text(), WAIT, 'the held poll body'), 'a["for the held poll"]\n');
});

// --- heart-beats (last: the sessions opened at load have been idle since) ---------------------

test('heart-beat over raw xhr polling: the held poll ends with "h\\n" after 25 s', { timeout: HEARTBEAT + 20000 }, async () => {
  const raw = await within(rawHeartbeat, HEARTBEAT + 8000, 'the raw xhr poll held until a heart-beat');
  assert.ok(!raw.error, `raw xhr heart-beat: ${raw.error?.message}`);
  assert.equal(raw.first.body, 'o\n');
  assert.equal(raw.second.body, 'h\n', 'the held poll ends with the heart-beat frame');
  assert.ok(raw.after >= HEARTBEAT - 1000, `the raw heart-beat came after ${raw.after} ms`);
});

for (const transport of TRANSPORTS) {
  test(`heart-beat over ${transport}: an idle session gets "h" after 25 s, and still echoes`, {
    timeout: HEARTBEAT + 20000,
    ...known(BUG.WS_HEARTBEAT, transport === 'websocket'),
  }, async () => {
    const w = heartbeatWatch.get(transport);
    const left = () => Math.max(1, w.started + HEARTBEAT + 5000 - Date.now());
    await within(w.open, left(), `the heart-beat session over ${transport} to open`);
    assert.equal(w.opened, transport);
    await within(w.beat, left(), `a heart-beat over ${transport} by 30 s after it opened (heart-beats seen at ${JSON.stringify(w.beats)} ms)`);
    assert.equal(w.closed, null, `${transport} closed: ${JSON.stringify(w.closed)}`);
    w.sock.send(`alive over ${transport}`);
    assert.equal(await w.messages.next(`the echo after the heart-beat over ${transport}`), `alive over ${transport}`);
  });
}
