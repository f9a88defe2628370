// Interop: @stomp/stompjs (a real STOMP client) over WebSocket, with `ws` as the WebSocket
// (Node 20 has no global one), plus raw WebSocket and TCP sockets for what stompjs would never
// send. Run by run.sh against a running sockeye-chat: SOCKEYE_WS, SOCKEYE_HTTP,
// SOCKEYE_STOMP_HOST, SOCKEYE_STOMP_PORT. Every wait is bounded; so is every test.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { Client, Versions } from '@stomp/stompjs';
import WebSocket from 'ws';

for (const name of ['SOCKEYE_WS', 'SOCKEYE_HTTP', 'SOCKEYE_STOMP_PORT']) {
  if (!process.env[name]) throw new Error(`no server to test (${name} unset): run chat/interop/run.sh`);
}
const WS_URL = process.env.SOCKEYE_WS;
// Set when the server relays to RabbitMQ (run.sh with RELAY=rabbitmq): queues then follow
// RabbitMQ's rules (a NACKed message may go back to the same subscriber).
const RELAY = process.env.SOCKEYE_RELAY;
const HTTP = process.env.SOCKEYE_HTTP;
const STOMP_HOST = process.env.SOCKEYE_STOMP_HOST ?? '127.0.0.1';
const STOMP_PORT = Number(process.env.SOCKEYE_STOMP_PORT);
const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];
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
 * A connected stompjs client. `conn.frames` holds every WebSocket message as received
 * ({ isBinary, data }), `conn.sent` counts messages sent, `conn.serverBeats` heart-beat EOLs, `conn.errors` ERROR frames,
 * `conn.closed` resolves with the close { code, reason }.
 */
async function connect({ login, versions, heartbeat = [0, 0], options = {} } = {}) {
  const conn = { frames: [], sent: 0, serverBeats: 0, beatsSeen: 0, errors: new Inbox() };
  let closed;
  conn.closed = new Promise((resolve) => (closed = resolve));
  const client = new Client({
    webSocketFactory: () => {
      const ws = new WebSocket(WS_URL, PROTOCOLS);
      ws.on('message', (data, isBinary) => {
        const bytes = Buffer.from(data);
        if (!isBinary && (bytes.equals(Buffer.from('\n')) || bytes.equals(Buffer.from('\r\n')))) {
          conn.serverBeats += 1;
        } else {
          conn.frames.push({ isBinary, data: bytes });
        }
      });
      ws.on('close', (code, reason) => closed({ code, reason: reason.toString() }));
      const send = ws.send.bind(ws);
      ws.send = (data, ...rest) => {
        conn.sent += 1;
        return send(data, ...rest);
      };
      conn.ws = ws;
      return ws;
    },
    connectHeaders: login ? { login, passcode: 'unchecked' } : {},
    heartbeatOutgoing: heartbeat[0],
    heartbeatIncoming: heartbeat[1],
    reconnectDelay: 0,
    debug: () => {},
    ...options,
  });
  if (versions) client.stompVersions = new Versions(versions);
  conn.client = client;
  cleanups.push(async () => {
    if (!client.active) return;
    await within(client.deactivate(), WAIT, 'deactivate')
      .catch(() => within(client.deactivate({ force: true }), WAIT, 'a forced deactivate'));
  });
  const connected = new Promise((resolve, reject) => {
    client.onConnect = resolve;
    client.onStompError = (f) => reject(new Error(`ERROR before CONNECTED: ${f.headers.message}`));
    client.onWebSocketClose = (e) => reject(new Error(`closed before CONNECTED: ${e.code} ${e.reason}`));
  });
  client.activate();
  conn.connected = await within(connected, WAIT, 'CONNECTED');
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
  await got;
  return { inbox, subscription };
}

/** SEND with a receipt, awaited: delivery is under way when this returns. */
async function publish(conn, destination, body, headers = {}) {
  const id = `send-${uid()}`;
  const got = receipt(conn, id);
  const frame = { destination, headers: { ...headers, receipt: id } };
  if (typeof body === 'string') frame.body = body;
  else frame.binaryBody = body;
  conn.client.publish(frame);
  return got;
}

/** A bare WebSocket speaking STOMP by hand. */
async function rawWs() {
  const ws = new WebSocket(WS_URL, PROTOCOLS);
  const messages = new Inbox();
  let beats = 0;
  ws.on('message', (data, isBinary) => {
    const text = Buffer.from(data).toString();
    if (!isBinary && text.trim() === '') beats += 1;
    else messages.push({ text, isBinary });
  });
  const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await within(new Promise((resolve, reject) => {
    ws.on('open', resolve);
    ws.on('error', reject);
  }), WAIT, 'WebSocket open');
  cleanups.push(() => ws.terminate());
  return { ws, messages, closed, beats: () => beats };
}

/**
 * A bare STOMP/TCP connection (net.Socket). Frames are parsed as they arrive (content-length
 * aware, heart-beat EOLs skipped) into an inbox: `frame()` gives { command, headers, body }.
 */
async function rawTcp() {
  const socket = net.connect(STOMP_PORT, STOMP_HOST);
  cleanups.push(() => socket.destroy());
  await within(new Promise((resolve, reject) => {
    socket.on('connect', resolve);
    socket.on('error', reject);
  }), WAIT, 'TCP connect');
  const frames = new Inbox();
  let buffer = Buffer.alloc(0);
  const parse = () => {
    for (;;) {
      let skip = 0;
      while (buffer[skip] === 0x0a || buffer[skip] === 0x0d) skip += 1;
      buffer = buffer.subarray(skip);
      const end = buffer.indexOf('\n\n');
      if (end < 0) return;
      const [command, ...lines] = buffer.subarray(0, end).toString().split('\n');
      const headers = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon);
        if (!(name in headers)) headers[name] = line.slice(colon + 1);
      }
      const start = end + 2;
      let stop;
      if (headers['content-length'] !== undefined) {
        stop = start + Number(headers['content-length']);
        if (buffer.length <= stop) return;
      } else {
        stop = buffer.indexOf(0, start);
        if (stop < 0) return;
      }
      const body = Buffer.from(buffer.subarray(start, stop));
      buffer = buffer.subarray(stop + 1);
      frames.push({ command, headers, body });
    }
  };
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    parse();
  });
  const tcp = {
    socket,
    send: (data) => socket.write(data),
    frame: (what = 'a frame', ms = WAIT) => frames.next(what, ms),
  };
  tcp.send('CONNECT\naccept-version:1.2\nhost:localhost\n\n\0');
  const connected = await tcp.frame('CONNECTED over TCP');
  assert.equal(connected.command, 'CONNECTED');
  return tcp;
}

/** A connected client that can still send to itself: the server is alive and routing. */
async function assertStillWorks(conn) {
  const topic = `/topic/alive-${uid()}`;
  const { inbox } = await subscribe(conn, topic);
  await publish(conn, topic, 'still fine');
  assert.equal((await inbox.next('a message after the bad client')).body, 'still fine');
}

// --- connect --------------------------------------------------------------------------------

test('connects over the v12.stomp sub-protocol and negotiates STOMP 1.2', TEST, async () => {
  const conn = await connect();
  assert.equal(conn.ws.protocol, 'v12.stomp');
  assert.equal(conn.client.connectedVersion, '1.2');
  assert.equal(conn.connected.headers.version, '1.2');
  assert.match(conn.connected.headers.server, /^sockeye\//);
  assert.ok(conn.connected.headers.session);
});

test('negotiates 1.1 and 1.0 when the client offers only those', TEST, async () => {
  for (const version of ['1.1', '1.0']) {
    const conn = await connect({ versions: [version] });
    assert.equal(conn.client.connectedVersion, version);
    assert.equal(conn.connected.headers.version, version);
    const topic = `/topic/v${version}-${uid()}`;
    const { inbox } = await subscribe(conn, topic);
    await publish(conn, topic, `over ${version}`);
    assert.equal((await inbox.next()).body, `over ${version}`);
  }
});

// --- subscribe, send, receive, receipts -----------------------------------------------------

test('subscribe and send with receipts; the MESSAGE carries every header', TEST, async () => {
  const sub = await connect();
  const pub = await connect();
  const topic = `/topic/js-${uid()}`;
  const id = `s-${uid()}`;
  const subscribed = receipt(sub, 'receipt-for-subscribe');
  const inbox = new Inbox();
  sub.client.subscribe(topic, (m) => inbox.push(m), { id, receipt: 'receipt-for-subscribe' });
  const r1 = await subscribed;
  assert.equal(r1.command, 'RECEIPT');
  assert.equal(r1.headers['receipt-id'], 'receipt-for-subscribe');
  const sent = receipt(pub, 'receipt-for-send');
  pub.client.publish({
    destination: topic,
    body: '{"hello":"wörld ✓"}',
    // ':' and '\\' are escaped on the wire (STOMP 1.2). Not '\\' before 'c', 'n' or 'r': stompjs
    // 7.5.0 unescapes with sequential replace()s and turns an escaped '\\' + 'c' into '\\:'.
    headers: { 'content-type': 'application/json', 'x-custom': 'a:b\\path', receipt: 'receipt-for-send' },
  });
  const r2 = await sent;
  assert.equal(r2.headers['receipt-id'], 'receipt-for-send');
  const m = await inbox.next();
  assert.equal(m.command, 'MESSAGE');
  assert.equal(m.body, '{"hello":"wörld ✓"}');
  assert.equal(m.headers.destination, topic);
  assert.equal(m.headers.subscription, id);
  assert.ok(m.headers['message-id']);
  assert.equal(m.headers['content-type'], 'application/json');
  assert.equal(m.headers['x-custom'], 'a:b\\path');
  const wire = sub.frames.map((f) => f.data.toString()).find((t) => t.startsWith('MESSAGE\n'));
  assert.ok(wire.includes('\nx-custom:a\\cb\\\\path\n'), wire);
  assert.equal(m.headers.receipt, undefined);
});

// --- acknowledgements -----------------------------------------------------------------------

test('client-individual: a NACKed queue message is redelivered to the other subscriber', TEST, async () => {
  const queue = `/queue/js-nack-${uid()}`;
  const a = await connect();
  const b = await connect();
  const producer = await connect();
  const sa = await subscribe(a, queue, { ack: 'client-individual' });
  await publish(producer, queue, 'job-1');
  const first = await sa.inbox.next('job-1 at a');
  assert.equal(first.body, 'job-1');
  assert.equal(first.headers.redelivered, undefined);
  const sb = await subscribe(b, queue, { ack: 'client-individual' });
  first.nack();
  // RabbitMQ may give it back to a: with a gone, it is b's.
  if (RELAY) await within(a.client.deactivate(), WAIT, "a's deactivate");
  const again = await sb.inbox.next('the redelivery at b');
  assert.equal(again.body, 'job-1');
  assert.equal(again.headers.redelivered, 'true');
  assert.equal(again.headers.destination, queue);
  again.ack();
  // Settled: b leaving gives nothing back; a's next message is a new one.
  if (RELAY) {
    await publish(producer, queue, 'job-2');
    assert.equal((await sb.inbox.next('job-2')).body, 'job-2');
    return;
  }
  await within(b.client.deactivate(), WAIT, "b's deactivate");
  await publish(producer, queue, 'job-2');
  assert.equal((await sa.inbox.next('job-2')).body, 'job-2');
});

test('client ack: a subscriber whose connection drops before ACK has its messages redelivered', TEST, async () => {
  const queue = `/queue/js-drop-${uid()}`;
  const c = await connect();
  const d = await connect();
  const producer = await connect();
  const sc = await subscribe(c, queue, { ack: 'client' });
  await publish(producer, queue, 'm1');
  await publish(producer, queue, 'm2');
  assert.equal((await sc.inbox.next()).body, 'm1');
  assert.equal((await sc.inbox.next()).body, 'm2');
  const sd = await subscribe(d, queue, { ack: 'client' });
  c.ws.terminate(); // the TCP connection goes, no DISCONNECT, nothing acknowledged
  const got = [await sd.inbox.next('m1 redelivered'), await sd.inbox.next('m2 redelivered')];
  assert.deepEqual(got.map((m) => m.body), ['m1', 'm2']);
  for (const m of got) assert.equal(m.headers.redelivered, 'true');
});

// --- heart-beats ----------------------------------------------------------------------------

test('heart-beats 1000,1000: server beats arrive and the connection stays up', TEST, async () => {
  const conn = await connect({ heartbeat: [1000, 1000] });
  assert.equal(conn.connected.headers['heart-beat'], '1000,1000');
  await new Promise((resolve) => setTimeout(resolve, 4500)); // several periods
  assert.ok(conn.serverBeats >= 3, `server heart-beats seen: ${conn.serverBeats}`);
  assert.ok(conn.beatsSeen >= 3, `stompjs saw ${conn.beatsSeen} heart-beats`);
  assert.equal(conn.client.connected, true);
  await assertStillWorks(conn);
});

test('a WebSocket client that stops sending heart-beats is closed within period + tolerance', TEST, async () => {
  const raw = await rawWs();
  raw.ws.send('CONNECT\naccept-version:1.2\nheart-beat:1000,1000\n\n\0');
  const connected = await raw.messages.next('CONNECTED');
  assert.match(connected.text, /^CONNECTED\n/);
  assert.match(connected.text, /\nheart-beat:1000,1000\n/);
  const start = Date.now();
  const { code, reason } = await within(raw.closed, 6000, 'the heart-beat close');
  const took = Date.now() - start;
  // The server expects a beat every 1000 ms, tolerates max(500, 1000) ms more, and checks
  // every 250 ms.
  assert.ok(took >= 1000, `closed after ${took} ms, before one period`);
  assert.ok(took <= 1000 + 1000 + 2 * 250 + 500, `closed only after ${took} ms`);
  assert.equal(code, 1002);
  assert.equal(reason, 'STOMP heart-beat timeout');
  assert.ok(raw.beats() >= 1, 'no server heart-beat arrived');
});

// --- user destinations ----------------------------------------------------------------------

test("/user/ann/queue/x reaches both of ann's sessions and not bob", TEST, async () => {
  const ann1 = await connect({ login: 'ann' });
  const ann2 = await connect({ login: 'ann' });
  const bob = await connect({ login: 'bob' });
  assert.equal(ann1.connected.headers['user-name'], 'ann');
  assert.equal(bob.connected.headers['user-name'], 'bob');
  const queue = `/queue/x-${uid()}`;
  const inboxes = {};
  for (const [name, conn] of [['ann1', ann1], ['ann2', ann2], ['bob', bob]]) {
    inboxes[name] = (await subscribe(conn, `/user${queue}`)).inbox;
  }
  const sender = await connect();
  await publish(sender, `/user/ann${queue}`, 'for ann', { 'x-note': 'n1' });
  for (const name of ['ann1', 'ann2']) {
    const m = await inboxes[name].next(`ann's message at ${name}`);
    assert.equal(m.body, 'for ann');
    assert.equal(m.headers.destination, `/user${queue}`);
    assert.equal(m.headers['x-note'], 'n1');
  }
  // bob's first message is the one sent to bob afterwards: ann's never reached him.
  await publish(sender, `/user/bob${queue}`, 'for bob');
  assert.equal((await inboxes.bob.next("bob's message")).body, 'for bob');
});

// --- disconnect -----------------------------------------------------------------------------

test('DISCONNECT with a receipt: stompjs gets the RECEIPT, the connection closes', TEST, async () => {
  const conn = await connect();
  conn.client.disconnectHeaders = { receipt: 'bye-ws' };
  const disconnected = new Promise((resolve) => (conn.client.onDisconnect = resolve));
  await within(conn.client.deactivate(), WAIT, 'deactivate');
  const frame = await within(disconnected, WAIT, 'onDisconnect');
  assert.equal(frame.command, 'RECEIPT');
  assert.equal(frame.headers['receipt-id'], 'bye-ws');
  await within(conn.closed, WAIT, 'the close');
  // And on a bare socket: RECEIPT, then the server closes normally.
  const raw = await rawWs();
  raw.ws.send('CONNECT\naccept-version:1.2\n\n\0');
  await raw.messages.next('CONNECTED');
  raw.ws.send('DISCONNECT\nreceipt:77\n\n\0');
  assert.match((await raw.messages.next('RECEIPT')).text, /^RECEIPT\nreceipt-id:77\n/);
  const { code } = await within(raw.closed, WAIT, 'the server close');
  assert.equal(code, 1000);
});

// --- the chat application -------------------------------------------------------------------

test('chat end to end: POST /api/rooms, /app/chat.join and /app/chat.send, /topic/rooms.{id}', TEST, async () => {
  const created = await fetch(`${HTTP}/api/rooms`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: `Interop ${uid()}` }),
    signal: AbortSignal.timeout(WAIT),
  });
  assert.equal(created.status, 201);
  const room = await created.json();
  assert.ok(room.id);
  const topic = `/topic/rooms.${room.id}`;

  const ann = await connect({ login: 'ann' });
  const annTopic = (await subscribe(ann, topic)).inbox;
  const annHistory = (await subscribe(ann, '/user/queue/history')).inbox;
  ann.client.publish({ destination: '/app/chat.join', body: JSON.stringify({ roomId: room.id, type: 'JOIN', sender: 'ann' }) });
  assert.deepEqual(JSON.parse((await annHistory.next('the history')).body), []);
  const joined = await annTopic.next('JOIN');
  assert.equal(joined.headers['content-type'], 'application/json');
  assert.equal(joined.headers.destination, topic);
  assert.deepEqual(
    (({ roomId, type, sender }) => ({ roomId, type, sender }))(JSON.parse(joined.body)),
    { roomId: room.id, type: 'JOIN', sender: 'ann' },
  );

  ann.client.publish({ destination: '/app/chat.send', body: JSON.stringify({ roomId: room.id, type: 'TALK', message: 'hi from stompjs' }) });
  const talk = JSON.parse((await annTopic.next('TALK')).body);
  assert.equal(talk.type, 'TALK');
  assert.equal(talk.sender, 'ann');
  assert.equal(talk.message, 'hi from stompjs');
  assert.equal(talk.roomId, room.id);
  assert.ok(talk.id && talk.timestamp);

  // bob joins: his history holds ann's messages; ann sees him come and go.
  const bob = await connect({ login: 'bob' });
  const bobHistory = (await subscribe(bob, '/user/queue/history')).inbox;
  await subscribe(bob, topic);
  bob.client.publish({ destination: '/app/chat.join', body: JSON.stringify({ roomId: room.id, type: 'JOIN', sender: 'bob' }) });
  const history = JSON.parse((await bobHistory.next("bob's history")).body);
  assert.deepEqual(history.map((m) => [m.type, m.sender, m.message].slice(0, m.type === 'TALK' ? 3 : 2)), [
    ['JOIN', 'ann'],
    ['TALK', 'ann', 'hi from stompjs'],
  ]);
  assert.equal(JSON.parse((await annTopic.next("bob's JOIN")).body).sender, 'bob');
  const detail = await (await fetch(`${HTTP}/api/rooms/${room.id}`, { signal: AbortSignal.timeout(WAIT) })).json();
  assert.deepEqual([...detail.members].sort(), ['ann', 'bob']);
  await within(bob.client.deactivate(), WAIT, "bob's deactivate");
  const left = JSON.parse((await annTopic.next("bob's LEAVE on disconnect")).body);
  assert.deepEqual([left.type, left.sender], ['LEAVE', 'bob']);

  // Errors go to the sender alone, on /user/queue/errors.
  const errors = (await subscribe(ann, '/user/queue/errors')).inbox;
  ann.client.publish({ destination: '/app/chat.send', body: JSON.stringify({ roomId: 'no-such-room', type: 'TALK', message: 'x' }) });
  const error = JSON.parse((await errors.next('the chat error')).body);
  assert.ok(error.error, JSON.stringify(error));
});

// --- bad input ------------------------------------------------------------------------------

for (const [name, frame, problem] of [
  ['an unknown command', 'BOGUS\n\n\0', 'unknown command'],
  ['a SEND without destination', 'SEND\n\nwhere to?\0', 'SEND without destination'],
]) {
  test(`${name} from a stompjs connection: ERROR naming it, a close, others unaffected`, TEST, async () => {
    const bystander = await connect();
    const bad = await connect();
    bad.ws.send(frame); // through the client's own WebSocket: stompjs has no API for bad frames
    const error = await bad.errors.next('ERROR');
    assert.equal(error.command, 'ERROR');
    assert.ok(error.headers.message.includes(problem), error.headers.message);
    const { code, reason } = await within(bad.closed, WAIT, 'the close after ERROR');
    assert.equal(code, 1002);
    assert.equal(reason, 'STOMP error');
    await assertStillWorks(bystander);
  });
}

// --- bodies that are not UTF-8 --------------------------------------------------------------

test('a non-UTF-8 body sent over TCP arrives as a binary WebSocket message, UTF-8 as text', TEST, async () => {
  const conn = await connect();
  const topic = `/topic/bin-${uid()}`;
  const { inbox } = await subscribe(conn, topic);
  const tcp = await rawTcp();
  const bytes = Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x0a, 0x00, 0x6f, 0x6b]);
  tcp.send(Buffer.concat([
    Buffer.from(`SEND\ndestination:${topic}\ncontent-type:application/octet-stream\ncontent-length:${bytes.length}\nreceipt:bin\n\n`),
    bytes,
    Buffer.from([0]),
  ]));
  assert.equal((await tcp.frame('RECEIPT bin')).headers['receipt-id'], 'bin');
  const binary = await inbox.next('the binary MESSAGE');
  assert.deepEqual(Buffer.from(binary.binaryBody), bytes);
  assert.equal(binary.headers['content-type'], 'application/octet-stream');

  const text = 'héllo ✓';
  tcp.send(`SEND\ndestination:${topic}\ncontent-type:text/plain\nreceipt:txt\n\n${text}\0`);
  assert.equal((await tcp.frame('RECEIPT txt')).headers['receipt-id'], 'txt');
  assert.equal((await inbox.next('the text MESSAGE')).body, text);

  const messages = conn.frames.filter((f) => f.data.subarray(0, 8).toString() === 'MESSAGE\n');
  assert.equal(messages.length, 2);
  assert.equal(messages[0].isBinary, true, 'the non-UTF-8 frame should be a binary WebSocket message');
  assert.ok(messages[0].data.includes(bytes));
  assert.equal(messages[1].isBinary, false, 'the UTF-8 frame should be a text WebSocket message');
  assert.ok(messages[1].data.toString().endsWith(`\n\n${text}\0`));
});

test('a binary body from stompjs (binaryBody) reaches a TCP subscriber byte for byte', TEST, async () => {
  const topic = `/topic/bin-up-${uid()}`;
  const tcp = await rawTcp();
  tcp.send(`SUBSCRIBE\nid:t\ndestination:${topic}\nreceipt:sub\n\n\0`);
  assert.equal((await tcp.frame('RECEIPT sub')).headers['receipt-id'], 'sub');
  const ws = await connect();
  const { inbox } = await subscribe(ws, topic);
  const bytes = new Uint8Array([0xc3, 0x28, 0x00, 0xff, 0x41]);
  await publish(ws, topic, bytes, { 'content-type': 'application/octet-stream' });
  const atWs = await inbox.next('the MESSAGE over WebSocket');
  assert.deepEqual(new Uint8Array(atWs.binaryBody), bytes);
  const raw = await tcp.frame('the MESSAGE over TCP');
  assert.equal(raw.command, 'MESSAGE');
  assert.equal(raw.headers['content-length'], String(bytes.length));
  assert.deepEqual(new Uint8Array(raw.body), bytes);
});

// --- sizes, splitting, bursts -------------------------------------------------------------

test('a 512 KiB message goes through WebSocket and TCP intact', TEST, async () => {
  const topic = `/topic/big-${uid()}`;
  const tcp = await rawTcp();
  tcp.send(`SUBSCRIBE\nid:t\ndestination:${topic}\nreceipt:sub\n\n\0`);
  await tcp.frame('RECEIPT sub');
  const sub = await connect();
  const { inbox } = await subscribe(sub, topic);
  const pub = await connect();
  const body = Array.from({ length: 512 * 1024 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');
  await publish(pub, topic, body);
  assert.equal((await inbox.next('the big MESSAGE')).body, body);
  const raw = await tcp.frame('the big MESSAGE over TCP');
  assert.equal(raw.body.toString(), body);
});

test('a body over --max-message-size gets ERROR "frame body too large"', TEST, async () => {
  const bystander = await connect();
  const bad = await connect();
  bad.client.publish({ destination: `/topic/huge-${uid()}`, body: 'x'.repeat((1 << 20) + 1) });
  const error = await bad.errors.next('ERROR');
  assert.match(error.headers.message, /frame body too large/);
  const { code } = await within(bad.closed, WAIT, 'the close after ERROR');
  assert.equal(code, 1002);
  await assertStillWorks(bystander);
});

test('frames split over many WebSocket messages (stompjs splitLargeFrames) are reassembled', TEST, async () => {
  const topic = `/topic/split-${uid()}`;
  const sub = await connect();
  const { inbox } = await subscribe(sub, topic);
  const pub = await connect({ options: { splitLargeFrames: true, maxWebSocketChunkSize: 4096 } });
  const body = 'split '.repeat(20000); // 120,000 bytes: 30 WebSocket messages
  const before = pub.sent;
  await publish(pub, topic, body);
  assert.ok(pub.sent - before >= 30, `stompjs sent the frame in ${pub.sent - before} messages`);
  assert.equal((await inbox.next('the reassembled MESSAGE')).body, body);
});

test('a burst on a queue: each of 200 messages to exactly one of 4 consumers (WebSocket and TCP)', TEST, async () => {
  const queue = `/queue/burst-${uid()}`;
  const received = [];
  const consumers = [];
  for (let i = 0; i < 3; i += 1) {
    const conn = await connect();
    conn.client.subscribe(queue, (m) => {
      received.push(m.body);
      m.ack();
    }, { ack: 'client-individual', receipt: `r${i}` });
    await receipt(conn, `r${i}`);
    consumers.push(conn);
  }
  const tcp = await rawTcp();
  tcp.send(`SUBSCRIBE\nid:t\ndestination:${queue}\nreceipt:sub\n\n\0`);
  await tcp.frame('RECEIPT sub');
  const producers = [await connect(), await connect()];
  await Promise.all(producers.map(async (p, n) => {
    for (let i = 0; i < 100; i += 1) p.client.publish({ destination: queue, body: `p${n}-${i}` });
    await publish(p, '/topic/sync', 'done');
  }));
  const viaTcp = [];
  const deadline = Date.now() + 10000;
  while (received.length + viaTcp.length < 200 && Date.now() < deadline) {
    try {
      viaTcp.push((await tcp.frame('a queue message over TCP', 200)).body.toString());
    } catch {
      // nothing over TCP just now; the WebSocket consumers may still be receiving
    }
  }
  const all = [...received, ...viaTcp].sort();
  const expected = [0, 1].flatMap((n) => Array.from({ length: 100 }, (_, i) => `p${n}-${i}`)).sort();
  assert.deepEqual(all, expected);
  assert.ok(viaTcp.length > 0 && received.length > 0, `tcp ${viaTcp.length}, ws ${received.length}`);
});

test('a topic keeps one publisher\'s order, to WebSocket and TCP subscribers alike', TEST, async () => {
  const topic = `/topic/order-${uid()}`;
  const sub = await connect();
  const { inbox } = await subscribe(sub, topic);
  const tcp = await rawTcp();
  tcp.send(`SUBSCRIBE\nid:t\ndestination:${topic}\nreceipt:sub\n\n\0`);
  await tcp.frame('RECEIPT sub');
  const pub = await connect();
  for (let i = 0; i < 500; i += 1) pub.client.publish({ destination: topic, body: String(i) });
  for (let i = 0; i < 500; i += 1) {
    assert.equal((await inbox.next(`message ${i} over WebSocket`)).body, String(i));
    assert.equal((await tcp.frame(`message ${i} over TCP`)).body.toString(), String(i));
  }
});
