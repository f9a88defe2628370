// Interop over TLS: `ws` and @stomp/stompjs over wss://, node's https for the API, and STOMP over
// TCP with TLS (node:tls), each trusting the test CA; and `ws` without the CA refused. Run by
// tls.sh against a sockeye-chat started with --tls-cert/--tls-key/--stomp-tls: SOCKEYE_CA,
// SOCKEYE_HTTPS, SOCKEYE_WSS, SOCKEYE_STOMP_PORT. Every wait is bounded; so is every test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

for (const name of ['SOCKEYE_CA', 'SOCKEYE_HTTPS', 'SOCKEYE_WSS', 'SOCKEYE_STOMP_PORT']) {
  if (!process.env[name]) throw new Error(`no server to test (${name} unset): run chat/interop/tls.sh`);
}
const CA = fs.readFileSync(process.env.SOCKEYE_CA);
const HTTPS = process.env.SOCKEYE_HTTPS;
const WSS = process.env.SOCKEYE_WSS;
const STOMP_PORT = Number(process.env.SOCKEYE_STOMP_PORT);
const PROTOCOLS = ['v12.stomp', 'v11.stomp', 'v10.stomp'];
const WAIT = 5000;
const TEST = { timeout: 20000 };

function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

test('ws over wss with the CA: STOMP CONNECT gets CONNECTED', TEST, async () => {
  const ws = new WebSocket(WSS, PROTOCOLS, { ca: CA });
  const first = new Promise((resolve, reject) => {
    ws.on('open', () => ws.send('CONNECT\naccept-version:1.2\nhost:localhost\n\n\0'));
    ws.on('message', (data) => resolve(data.toString()));
    ws.on('error', reject);
  });
  const frame = await within(first, WAIT, 'CONNECTED over wss');
  assert.match(frame, /^CONNECTED\n/);
  assert.equal(ws.protocol, 'v12.stomp');
  const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  ws.close(1000);
  assert.equal(await within(closed, WAIT, 'the close handshake'), 1000);
});

test('ws over wss without the CA is refused by the client', TEST, async () => {
  const ws = new WebSocket(WSS, PROTOCOLS);
  const error = await within(
    new Promise((resolve) => ws.on('error', resolve)),
    WAIT,
    'a certificate error',
  );
  assert.match(String(error.code), /SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);
});

test('@stomp/stompjs over wss: subscribe, publish, receive', TEST, async () => {
  const messages = [];
  let got;
  const arrived = new Promise((resolve) => (got = resolve));
  let connected;
  const up = new Promise((resolve) => (connected = resolve));
  const client = new Client({
    webSocketFactory: () => new WebSocket(WSS, PROTOCOLS, { ca: CA }),
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => {},
    onConnect: connected,
  });
  client.activate();
  try {
    await within(up, WAIT, 'stompjs CONNECTED over wss');
    client.subscribe('/topic/tls.interop', (m) => {
      messages.push(m.body);
      got();
    }, { receipt: 'sub-1' });
    const receipted = new Promise((resolve) => client.watchForReceipt('sub-1', resolve));
    await within(receipted, WAIT, 'the SUBSCRIBE receipt');
    client.publish({ destination: '/topic/tls.interop', body: 'hello over tls' });
    await within(arrived, WAIT, 'the published message');
    assert.deepEqual(messages, ['hello over tls']);
  } finally {
    await client.deactivate();
  }
});

test('https: GET /api/rooms with the CA', TEST, async () => {
  const body = await within(
    new Promise((resolve, reject) => {
      https
        .get(`${HTTPS}/api/rooms`, { ca: CA }, (res) => {
          let data = '';
          res.on('data', (c) => (data += c));
          res.on('end', () => resolve({ status: res.statusCode, data }));
        })
        .on('error', reject);
    }),
    WAIT,
    'the API answer',
  );
  assert.equal(body.status, 200);
  assert.ok(Array.isArray(JSON.parse(body.data).rooms ?? JSON.parse(body.data)), body.data);
});

test('STOMP over TCP with TLS: CONNECT gets CONNECTED', TEST, async () => {
  const socket = tls.connect({ host: '127.0.0.1', port: STOMP_PORT, servername: 'localhost', ca: CA });
  try {
    const frame = await within(
      new Promise((resolve, reject) => {
        let data = '';
        socket.on('secureConnect', () => socket.write('CONNECT\naccept-version:1.2\nhost:localhost\n\n\0'));
        socket.on('data', (c) => {
          data += c.toString();
          if (data.includes('\0')) resolve(data);
        });
        socket.on('error', reject);
      }),
      WAIT,
      'CONNECTED over STOMP/TLS',
    );
    assert.match(frame, /^CONNECTED\n/);
  } finally {
    socket.destroy();
  }
});
