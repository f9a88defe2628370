// Interop: @stomp/stompjs over SockJS (sockjs-client 1.6.1, in node) against sockeye-chat's
// /sockjs, forced onto each transport that works outside a browser: websocket, xhr-streaming,
// xhr-polling, eventsource. Run by run.sh against a running sockeye-chat: SOCKEYE_HTTP (and
// SOCKEYE_WS for a native WebSocket peer). Every wait is bounded; so is every test.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Client } from '@stomp/stompjs';
import SockJS from 'sockjs-client';
import WebSocket from 'ws';

for (const name of ['SOCKEYE_HTTP', 'SOCKEYE_WS']) {
  if (!process.env[name]) throw new Error(`no server to test (${name} unset): run chat/interop/run.sh`);
}
const SOCKJS_URL = `${process.env.SOCKEYE_HTTP.replace(/\/+$/, '')}/sockjs`;
const WS_URL = process.env.SOCKEYE_WS;
const TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling', 'eventsource'];
const WAIT = 5000; // ms, for anything that should happen at once
const TEST = { timeout: 20000 };

const uid = () => randomUUID().slice(0, 8);

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

/**
 * A stompjs client connected over SockJS forced onto `transport`. `conn.sock` is the SockJS
 * socket, `conn.raw` every SockJS message as received (strings), `conn.serverBeats` the STOMP
 * heart-beat EOLs among them, `conn.closed` resolves with the SockJS close { code, reason }.
 */
async function connect(transport, { login, heartbeat = [0, 0] } = {}) {
  const conn = { raw: [], serverBeats: 0, beatsSeen: 0, errors: new Inbox() };
  let closed;
  conn.closed = new Promise((resolve) => (closed = resolve));
  const client = new Client({
    webSocketFactory: () => {
      const sock = new SockJS(SOCKJS_URL, null, { transports: [transport] });
      sock.addEventListener('message', (e) => {
        if (e.data === '\n' || e.data === '\r\n') conn.serverBeats += 1;
        else conn.raw.push(e.data);
      });
      sock.addEventListener('close', (e) => closed({ code: e.code, reason: e.reason }));
      conn.sock = sock;
      return sock;
    },
    connectHeaders: login ? { login, passcode: 'unchecked' } : {},
    heartbeatOutgoing: heartbeat[0],
    heartbeatIncoming: heartbeat[1],
    reconnectDelay: 0,
    debug: () => {},
  });
  conn.client = client;
  cleanups.push(async () => {
    if (!client.active) return;
    await within(client.deactivate(), WAIT, 'deactivate')
      .catch(() => within(client.deactivate({ force: true }), WAIT, 'a forced deactivate'));
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onStompError = (f) => reject(new Error(`ERROR before CONNECTED: ${f.headers.message}`));
    client.onWebSocketClose = (e) => reject(new Error(`SockJS closed before CONNECTED: ${e.code} ${e.reason}`));
  });
  client.activate();
  conn.connected = await within(connected, WAIT, `CONNECTED over SockJS ${transport}`);
  assert.equal(conn.sock.transport, transport, 'the SockJS transport in use');
  client.onStompError = (f) => conn.errors.push(f);
  client.onWebSocketClose = () => {};
  client.onHeartbeatReceived = () => (conn.beatsSeen += 1);
  return conn;
}

function receipt(conn, id) {
  return within(new Promise((resolve) => conn.client.watchForReceipt(id, resolve)), WAIT, `RECEIPT ${id}`);
}

/** SUBSCRIBE with a receipt, awaited: the subscription is in place when this returns. */
async function subscribe(conn, destination, headers = {}) {
  const inbox = new Inbox();
  const id = `sub-${uid()}`;
  const got = receipt(conn, id);
  const subscription = conn.client.subscribe(destination, (m) => inbox.push(m), { ...headers, receipt: id });
  const frame = await got;
  return { inbox, subscription, receipt: frame };
}

/** SEND with a receipt, awaited: delivery is under way when this returns. */
async function publish(conn, destination, body, headers = {}) {
  const id = `send-${uid()}`;
  const got = receipt(conn, id);
  conn.client.publish({ destination, body, headers: { ...headers, receipt: id } });
  return got;
}

/** A native WebSocket peer on /ws, speaking STOMP by hand: `frame()` gives the next text. */
async function nativeWs() {
  const ws = new WebSocket(WS_URL, ['v12.stomp']);
  const messages = new Inbox();
  ws.on('message', (data) => {
    const text = Buffer.from(data).toString();
    if (text.trim() !== '') messages.push(text);
  });
  await within(new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('error', reject);
  }), WAIT, 'the native WebSocket to open');
  cleanups.push(() => ws.terminate());
  ws.send('CONNECT\naccept-version:1.2\nhost:localhost\n\n\0');
  assert.match(await messages.next('CONNECTED over /ws'), /^CONNECTED\n/);
  return { ws, frame: (what) => messages.next(what) };
}

// The body of the SEND tests: JSON, non-ASCII, and characters SockJS escapes on the wire.
const BODY = '{"hello":"wörld ✓ \u{1F600}","sep":"\u2028\u2029","ctl":"\t\u0001"}';

for (const transport of TRANSPORTS) {
  test(`SockJS ${transport}: CONNECT negotiates STOMP 1.2`, TEST, async () => {
    const conn = await connect(transport);
    assert.equal(conn.client.connectedVersion, '1.2');
    assert.equal(conn.connected.headers.version, '1.2');
    assert.match(conn.connected.headers.server, /^sockeye\//);
    assert.ok(conn.connected.headers.session);
  });

  test(`SockJS ${transport}: SUBSCRIBE and SEND with receipts; the MESSAGE has the body and headers`, TEST, async () => {
    const conn = await connect(transport);
    const topic = `/topic/sockjs-${uid()}`;
    const id = `s-${uid()}`;
    const inbox = new Inbox();
    const subscribed = receipt(conn, 'receipt-for-subscribe');
    conn.client.subscribe(topic, (m) => inbox.push(m), { id, receipt: 'receipt-for-subscribe' });
    const r1 = await subscribed;
    assert.equal(r1.command, 'RECEIPT');
    assert.equal(r1.headers['receipt-id'], 'receipt-for-subscribe');
    const sent = receipt(conn, 'receipt-for-send');
    conn.client.publish({
      destination: topic,
      body: BODY,
      headers: { 'content-type': 'application/json', 'x-custom': 'a:b', receipt: 'receipt-for-send' },
    });
    const r2 = await sent;
    assert.equal(r2.headers['receipt-id'], 'receipt-for-send');
    const m = await inbox.next('the MESSAGE');
    assert.equal(m.command, 'MESSAGE');
    assert.equal(m.body, BODY);
    assert.equal(m.headers.destination, topic);
    assert.equal(m.headers.subscription, id);
    assert.ok(m.headers['message-id']);
    assert.equal(m.headers['content-type'], 'application/json');
    assert.equal(m.headers['x-custom'], 'a:b');
    assert.equal(conn.errors.items.length, 0, 'no ERROR frames');
  });

  test(`SockJS ${transport}: a second client receives what the first publishes, in order`, TEST, async () => {
    const sub = await connect(transport);
    const pub = await connect(transport);
    const topic = `/topic/sockjs-pair-${uid()}`;
    const { inbox } = await subscribe(sub, topic);
    const own = await subscribe(pub, `/topic/sockjs-other-${uid()}`); // pub's own, never sent to
    await publish(pub, topic, 'first');
    assert.equal((await inbox.next('the first MESSAGE at the second client')).body, 'first');
    for (let i = 0; i < 200; i += 1) pub.client.publish({ destination: topic, body: `m${i}` });
    await publish(pub, topic, 'last');
    for (let i = 0; i < 200; i += 1) assert.equal((await inbox.next(`message ${i} of 200`)).body, `m${i}`);
    assert.equal((await inbox.next('the last MESSAGE')).body, 'last');
    assert.equal(own.inbox.items.length, 0, 'the publisher got nothing on its other subscription');
  });

  test(`SockJS ${transport}: a native /ws subscriber gets the SockJS client's SEND, and the reverse`, TEST, async () => {
    const sockjs = await connect(transport);
    const native = await nativeWs();
    const topic = `/topic/sockjs-ws-${uid()}`;
    native.ws.send(`SUBSCRIBE\nid:n\ndestination:${topic}\nreceipt:nsub\n\n\0`);
    assert.match(await native.frame('RECEIPT nsub'), /^RECEIPT\nreceipt-id:nsub\n/);
    const { inbox } = await subscribe(sockjs, topic);
    await publish(sockjs, topic, BODY);
    const atNative = await native.frame('the MESSAGE over /ws');
    assert.match(atNative, /^MESSAGE\n/);
    assert.ok(atNative.endsWith(`\n\n${BODY}\0`), atNative);
    assert.equal((await inbox.next('its own MESSAGE over SockJS')).body, BODY);
    native.ws.send(`SEND\ndestination:${topic}\n\nfrom /ws\0`);
    assert.equal((await inbox.next('the MESSAGE from /ws over SockJS')).body, 'from /ws');
  });

  test(`SockJS ${transport}: a body with '%' sequences arrives unchanged`, TEST, async () => {
    const conn = await connect(transport);
    const topic = `/topic/sockjs-pct-${uid()}`;
    const { inbox } = await subscribe(conn, topic);
    // Only '%' followed by hex digits: a bare '%' would make the client throw, not just mangle.
    const body = 'save 100%25 now, %41%42 and %E2%9C%93';
    // No receipt: a mangled MESSAGE no longer matches its content-length, and stompjs would
    // take the RECEIPT after it for the rest of its body.
    conn.client.publish({ destination: topic, body });
    assert.equal((await inbox.next('the MESSAGE with % signs', 2000)).body, body);
  });

  test(`SockJS ${transport}: DISCONNECT closes the session with 1000`, TEST, async () => {
    const conn = await connect(transport);
    const topic = `/topic/sockjs-bye-${uid()}`;
    await subscribe(conn, topic);
    await within(conn.client.deactivate(), WAIT, 'deactivate');
    // 1000 either way: the server's c[1000,"disconnected"], or stompjs closing on the RECEIPT.
    const { code, reason } = await within(conn.closed, WAIT, 'the SockJS close');
    assert.equal(code, 1000, `closed with ${code} ${reason}`);
    assert.equal(conn.errors.items.length, 0, 'no ERROR frames');
  });

  // The session's last words: what the server sends just before it closes the session.

  test(`SockJS ${transport}: DISCONNECT with a receipt: the RECEIPT arrives, then the close`, TEST, async () => {
    const conn = await connect(transport);
    conn.client.disconnectHeaders = { receipt: `bye-${transport}` };
    const disconnected = new Promise((resolve) => (conn.client.onDisconnect = resolve));
    const receipted = within(disconnected, WAIT, 'onDisconnect (the RECEIPT to DISCONNECT)');
    receipted.catch(() => {});
    await within(conn.client.deactivate(), WAIT, 'deactivate');
    const { code } = await within(conn.closed, WAIT, 'the SockJS close');
    assert.equal(code, 1000);
    assert.ok(conn.raw.some((m) => m.startsWith('RECEIPT\n')),
      `the RECEIPT to DISCONNECT never arrived; SockJS messages: ${JSON.stringify(conn.raw.map((m) => m.split('\n')[0]))}`);
    const frame = await receipted;
    assert.equal(frame.command, 'RECEIPT');
    assert.equal(frame.headers['receipt-id'], `bye-${transport}`);
  });

  test(`SockJS ${transport}: a bad frame gets an ERROR naming it, then the close (1002)`, TEST, async () => {
    const bystander = await connect(transport);
    const bad = await connect(transport);
    bad.sock.send('BOGUS\n\n\0'); // through the client's own SockJS socket: stompjs sends no bad frames
    const { code, reason } = await within(bad.closed, WAIT, 'the close after the bad frame');
    assert.deepEqual([code, reason], [1002, 'STOMP error']);
    const error = bad.raw.find((m) => m.startsWith('ERROR\n'));
    assert.ok(error, `no ERROR frame before the close; SockJS messages: ${JSON.stringify(bad.raw.map((m) => m.split('\n')[0]))}`);
    assert.match(error, /\nmessage:unknown command\n/);
    const topic = `/topic/sockjs-alive-${uid()}`;
    const { inbox } = await subscribe(bystander, topic);
    await publish(bystander, topic, 'still fine');
    assert.equal((await inbox.next('a message at the bystander')).body, 'still fine');
  });

  if (transport !== 'websocket') {
    test(`SockJS ${transport}: a SEND of a 100 KiB body is delivered`, TEST, async () => {
      const sub = await connect(transport);
      const pub = await connect(transport);
      const topic = `/topic/sockjs-big-${uid()}`;
      const { inbox } = await subscribe(sub, topic);
      const body = 'z'.repeat(100 << 10);
      const closed = pub.closed.then((c) => {
        throw new Error(`the publisher's SockJS session closed: ${c.code} ${c.reason}`);
      });
      await Promise.race([publish(pub, topic, body), closed]);
      assert.equal((await inbox.next('the big MESSAGE')).body, body);
    });
  }
}

test('big MESSAGEs (400,000 and 900,000 characters) published over /ws reach a subscriber on every SockJS transport', TEST, async () => {
  const subs = await Promise.all(TRANSPORTS.map((t) => connect(t)));
  const topic = `/topic/sockjs-big-down-${uid()}`;
  const inboxes = await Promise.all(subs.map(async (conn) => (await subscribe(conn, topic)).inbox));
  const native = await nativeWs();
  // One at a time: two in a row can exceed a SockJS session's queue cap (the next test).
  for (const [n, body] of ['é✓'.repeat(200000), 'x'.repeat(900000), 'small'].entries()) {
    native.ws.send(`SEND\ndestination:${topic}\n\n${body}\0`);
    for (const [i, inbox] of inboxes.entries()) {
      const m = await inbox.next(`MESSAGE ${n} over SockJS ${TRANSPORTS[i]}`, 10000);
      assert.equal(m.body.length, body.length, `${TRANSPORTS[i]}: MESSAGE ${n}'s length`);
      assert.ok(m.body === body, `${TRANSPORTS[i]}: MESSAGE ${n}'s body differs`);
    }
  }
});

test('a SockJS (xhr) subscriber whose queue passes the cap is told (slow consumer), not left with a gap', TEST, async () => {
  // By hand, as sockjs-client's xhr-polling would, but not polling while the MESSAGEs come in.
  const url = `${SOCKJS_URL}/000/${uid()}`;
  const post = async (path, body, ms = WAIT) => {
    const r = await fetch(`${url}/${path}`, { method: 'POST', body, signal: AbortSignal.timeout(ms) });
    return { status: r.status, body: await r.text() };
  };
  assert.equal((await post('xhr')).body, 'o\n');
  const topic = `/topic/sockjs-cap-${uid()}`;
  const frames = [`CONNECT\naccept-version:1.2\nhost:localhost\n\n\0`, `SUBSCRIBE\nid:0\ndestination:${topic}\nreceipt:sub\n\n\0`];
  assert.equal((await post('xhr_send', JSON.stringify(frames))).status, 204);
  const got = [];
  while (!got.some((f) => f.startsWith('RECEIPT\n'))) {
    const poll = await post('xhr');
    assert.match(poll.body, /^a\[/, 'CONNECTED and the RECEIPT');
    got.push(...JSON.parse(poll.body.slice(1)));
  }
  const native = await nativeWs();
  const bodies = ['1'.repeat(600000), '2'.repeat(600000)]; // 1.2 MB: over the 1 MiB cap together
  for (const [n, body] of bodies.entries()) native.ws.send(`SEND\ndestination:${topic}\nreceipt:p${n}\n\n${body}\0`);
  for (const n of [0, 1]) assert.match(await native.frame(`RECEIPT p${n}`), new RegExp(`^RECEIPT\nreceipt-id:p${n}\n`));
  const seen = [];
  let closed = null;
  for (let polls = 0; polls < 3 && !closed; polls += 1) {
    let poll;
    try {
      poll = await post('xhr', undefined, 1500);
    } catch {
      break; // a poll held open: nothing more is coming
    }
    if (poll.body.startsWith('c')) closed = poll.body.trim();
    else if (poll.body.startsWith('a')) seen.push(...JSON.parse(poll.body.slice(1)));
  }
  const messages = seen.filter((f) => f.startsWith('MESSAGE\n'));
  const delivered = messages.length === 2;
  assert.ok(delivered || closed, `${messages.length} of 2 MESSAGEs arrived and the session is still open `
    + `(other frames: ${JSON.stringify(seen.filter((f) => !f.startsWith('MESSAGE\n')).map((f) => f.split('\n')[0]))})`);
});

test('STOMP heart-beats 1000,1000 over every SockJS transport at once: beats both ways, connections stay up', TEST, async () => {
  const conns = await Promise.all(TRANSPORTS.map((t) => connect(t, { heartbeat: [1000, 1000] })));
  for (const conn of conns) assert.equal(conn.connected.headers['heart-beat'], '1000,1000');
  await new Promise((resolve) => setTimeout(resolve, 4500)); // several periods
  for (const [i, conn] of conns.entries()) {
    const t = TRANSPORTS[i];
    assert.ok(conn.serverBeats >= 3, `${t}: server heart-beats seen: ${conn.serverBeats}`);
    assert.equal(conn.client.connected, true, `${t}: still connected`);
    const topic = `/topic/alive-${uid()}`;
    const { inbox } = await subscribe(conn, topic);
    await publish(conn, topic, 'still fine');
    assert.equal((await inbox.next(`a message after the heart-beats over ${t}`)).body, 'still fine');
  }
});
