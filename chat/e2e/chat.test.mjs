// End-to-end test of the chat pages in a real browser: Debian's Chromium, driven by
// playwright-core, against a sockeye-chat server this test starts (and restarts).
//
//   bash chat/e2e/run.sh            # installs, builds, runs this; artifacts in chat/e2e/artifacts/
//
// Environment (run.sh sets it): SOCKEYE_CHAT_BIN (the server binary), E2E_DATA_DIR (a fresh
// --data-dir), E2E_PORT (optional: a free port is picked), E2E_ARTIFACTS (screenshots, logs),
// CHROMIUM (default /usr/bin/chromium).
//
// One scenario, in steps that run in order; after a failed step the rest are skipped.
import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

import {
  CHROMIUM, CHROMIUM_ARGS, WAIT, within, eventually, messages, talks, notices, members,
  waitForState, stateLog, waitForTalk, send, join, shoot as shootInto, newContext as newBrowserContext,
  newPage as newBrowserPage, stepper,
} from './helpers.mjs';
import { ChatServer, freePort } from './server.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.resolve(process.env.E2E_ARTIFACTS || path.join(here, 'artifacts'));
const BIN = process.env.SOCKEYE_CHAT_BIN || path.resolve(here, '../../target/release/sockeye-chat');
// E2E_NO_WEBSOCKET=1: the pages have no WebSocket at all (an init script takes it away), so the
// chat must work over its SockJS fallback.
const NO_WEBSOCKET = process.env.E2E_NO_WEBSOCKET === '1';
// E2E_TLS_DIR=DIR: the server speaks https/wss with scripts/test-ca.sh's files in DIR; Chromium
// ignores certificate errors (the throwaway CA is not in its store).
const TLS_DIR = process.env.E2E_TLS_DIR || '';
const TRANSPORT = NO_WEBSOCKET ? 'over SockJS (HTTP)' : 'over WebSocket';
const RECONNECT_WAIT = 30_000; // backoff: 0.5, 1, 2, 4 s … (with jitter) after the server is back

const ROOM_NAME = 'Tea & biscuits';
const XSS = '<img src=x onerror=alert(1)>';

// The helpers (waits, what a page shows, the actions on it) are in helpers.mjs.
const shoot = (page, name) => shootInto(ARTIFACTS, page, name);

// --- the scenario ---

describe(`sockeye-chat in Chromium${NO_WEBSOCKET ? ', without WebSocket (SockJS)' : ''}`, { timeout: 180_000 }, () => {
  let server;
  let browser;
  let ctxA;
  let ctxB;
  let pageA;
  let pageB;
  const dialogs = [];
  const pageErrors = [];
  let roomId;
  let roomPath;
  // A step of the scenario: skipped once an earlier one failed.
  const step = stepper({ artifacts: ARTIFACTS, pages: () => [['ann', pageA], ['bob', pageB]] });
  const newContext = () => newBrowserContext(browser, { noWebSocket: NO_WEBSOCKET });
  const newPage = (ctx, who) => newBrowserPage(ctx, who, { dialogs, pageErrors });

  before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const dataDir = process.env.E2E_DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'sockeye-e2e-'));
    const port = Number(process.env.E2E_PORT) || (await freePort());
    server = new ChatServer({
      bin: BIN,
      port,
      dataDir,
      tlsDir: TLS_DIR,
      logFile: path.join(ARTIFACTS, 'server.log'),
      pidFile: path.join(ARTIFACTS, 'server.pid'),
    });
    process.on('exit', () => server.killNow());
    await server.start();
    const args = TLS_DIR ? [...CHROMIUM_ARGS, '--ignore-certificate-errors'] : CHROMIUM_ARGS;
    browser = await chromium.launch({ executablePath: CHROMIUM, args, timeout: 30_000 });
    ctxA = await newContext();
    ctxB = await newContext();
    pageA = await newPage(ctxA, 'ann');
    pageB = await newPage(ctxB, 'bob');
  }, { timeout: 90_000 }); // the server's start (15 s), Chromium's launch (30 s), two contexts

  after(async () => {
    if (browser) await within(browser.close(), WAIT, 'the browser to close').catch(() => {});
    if (server) await server.stop(); // bounded: SIGTERM, SIGKILL after 10 s
  }, { timeout: 60_000 });

  step('ann creates a room with the form on the room list and joins it', async () => {
    await pageA.goto(server.url + '/');
    await eventually('the empty list says so', async () =>
      assert.match(await pageA.textContent('#rooms-status'), /No rooms yet/));
    await pageA.fill('#room-name', ROOM_NAME);
    await pageA.click('#create-form button[type=submit]');
    const link = pageA.locator('#room-list li.fresh a');
    await link.waitFor();
    assert.equal(await link.locator('.room-name').textContent(), ROOM_NAME);
    assert.equal(await link.locator('.badge').textContent(), '0 members');
    roomPath = await link.getAttribute('href');
    assert.match(roomPath, /^\/rooms\/tea-biscuits-\d+$/);
    roomId = roomPath.split('/')[2];

    await link.click();
    await pageA.waitForURL(server.url + roomPath);
    await waitForState(pageA, 'connected');
    assert.deepEqual(await stateLog(pageA), ['offline', 'connecting…', 'connected']);
    assert.equal(await pageA.getAttribute('#conn-state', 'title'), TRANSPORT);
    if (NO_WEBSOCKET) assert.equal(await pageA.evaluate(() => typeof window.WebSocket), 'undefined');
    assert.equal(await pageA.textContent('#room-name'), ROOM_NAME);
    assert.equal(await pageA.title(), `${ROOM_NAME} · Sockeye Chat`);

    await join(pageA, 'ann');
    await eventually('"ann joined" shows', async () => assert.equal((await notices(pageA, 'ann joined')).length, 1));
    assert.deepEqual(await members(pageA), { names: ['ann'], count: '1' });
  });

  step('bob sees the room and its member count in the list, and joins', async () => {
    await pageB.goto(server.url + '/');
    const row = pageB.locator('#room-list li a', { hasText: ROOM_NAME });
    await row.waitFor();
    assert.equal(await row.locator('.badge').textContent(), '1 member');
    await shoot(pageB, 'rooms-bob.png');
    await row.click();
    await pageB.waitForURL(server.url + roomPath);
    await waitForState(pageB, 'connected');
    await join(pageB, 'bob');

    // bob's history starts with ann's JOIN; both see bob's.
    await eventually('bob sees "ann joined", then "bob joined"', async () =>
      assert.deepEqual((await messages(pageB)).map((m) => m.text), ['ann joined', 'bob joined']));
    await eventually('ann sees "bob joined"', async () =>
      assert.deepEqual((await messages(pageA)).map((m) => m.text), ['ann joined', 'bob joined']));
    for (const page of [pageA, pageB]) {
      await eventually('both are members', async () =>
        assert.deepEqual(await members(page), { names: ['ann', 'bob'], count: '2' }));
    }
    const bobs = pageA.locator('#member-list li.me-member');
    assert.equal(await bobs.textContent(), 'ann', "ann's own name is marked on her page");
  });

  step('messages go both ways, with the right sender', async () => {
    await send(pageA, 'Hello from ann 👋');
    await send(pageB, 'Hi ann, bob here.');
    for (const page of [pageA, pageB]) {
      await waitForTalk(page, 'ann', 'Hello from ann 👋');
      await waitForTalk(page, 'bob', 'Hi ann, bob here.');
    }
    // The same messages in the same order on both pages; each marks only its own as "mine".
    const a = await talks(pageA);
    const b = await talks(pageB);
    assert.deepEqual(a.map((m) => [m.id, m.sender, m.text]), b.map((m) => [m.id, m.sender, m.text]));
    assert.deepEqual(a.map((m) => m.mine), [true, false]);
    assert.deepEqual(b.map((m) => m.mine), [false, true]);
    assert.ok(a[0].id < a[1].id);
  });

  step('a message that looks like HTML is shown as text', async () => {
    await send(pageA, XSS);
    const shown = await waitForTalk(pageB, 'ann', XSS);
    assert.equal(shown.text, XSS);
    await waitForTalk(pageA, 'ann', XSS);
    await sleep(500); // time for an onerror to fire, if an <img> had been made
    for (const page of [pageA, pageB]) {
      assert.equal(await page.locator('#messages img').count(), 0, 'no <img> element in the messages');
      const raw = await page.$eval('#messages > li:last-child .text', (e) => ({ html: e.innerHTML, kids: e.children.length }));
      assert.equal(raw.kids, 0);
      assert.equal(raw.html, '&lt;img src=x onerror=alert(1)&gt;');
    }
    assert.deepEqual(dialogs, [], 'no dialog opened');
    await send(pageB, 'Looks like plain text to me.');
    await waitForTalk(pageA, 'bob', 'Looks like plain text to me.');
    await shoot(pageA, 'room-ann.png');
    await shoot(pageB, 'room-bob.png');
  });

  step('bob reloads: the history is there again and he is back in the room', async () => {
    const before = (await talks(pageB)).map((m) => [m.sender, m.text]);
    assert.equal(before.length, 4);
    await pageB.reload();
    await waitForState(pageB, 'connected');
    // The nickname is remembered: he re-joins by himself, and gets the history.
    await pageB.waitForSelector('#send-form:not([hidden])');
    assert.equal(await pageB.textContent('#me'), 'bob');
    await eventually('the history shows again', async () =>
      assert.deepEqual((await talks(pageB)).map((m) => [m.sender, m.text]), before));
    assert.ok((await talks(pageB)).some((m) => m.text === XSS), 'the HTML-like message is text again');
    assert.equal(await pageB.locator('#messages img').count(), 0);
    for (const page of [pageA, pageB]) {
      await eventually('both are members', async () =>
        assert.deepEqual((await members(page)).names, ['ann', 'bob']));
    }
    await send(pageB, 'Back after a reload.');
    await waitForTalk(pageA, 'bob', 'Back after a reload.');
    await waitForTalk(pageB, 'bob', 'Back after a reload.');
    await shoot(pageB, 'room-bob-reloaded.png');
  });

  step('bob closes his page: ann sees "bob left"', async () => {
    const leftBefore = (await notices(pageA, 'bob left')).length;
    await within(pageB.close(), WAIT, "bob's page to close");
    await eventually('ann sees "bob left"', async () =>
      assert.equal((await notices(pageA, 'bob left')).length, leftBefore + 1));
    await eventually('bob is gone from the members', async () =>
      assert.deepEqual(await members(pageA), { names: ['ann'], count: '1' }));
  });

  step('the server restarts: ann sees reconnecting, then connected; the room and history survive', async () => {
    const historyBefore = (await talks(pageA)).map((m) => [m.sender, m.text]);
    const logBefore = (await stateLog(pageA)).length;
    const stopped = await server.stop();
    assert.ok(!stopped.killed, `the server stops on SIGTERM (${JSON.stringify(stopped)})`);

    await waitForState(pageA, 'reconnecting');
    assert.equal(await pageA.isDisabled('#send-form button[type=submit]'), true, 'no sending while offline');
    await sleep(1500); // down for a while: a retry or two fail
    await shoot(pageA, 'room-ann-reconnecting.png');
    await waitForState(pageA, 'reconnecting');

    await server.start();
    await waitForState(pageA, 'connected', RECONNECT_WAIT);
    const log = (await stateLog(pageA)).slice(logBefore - 1);
    assert.deepEqual(log, ['connected', 'reconnecting…', 'connected'], 'the indicator went through the states');

    // ann re-joins by herself (the restarted server has no members) and can talk again.
    await eventually('ann is a member again', async () =>
      assert.deepEqual(await members(pageA), { names: ['ann'], count: '1' }));
    assert.equal(await pageA.isEnabled('#send-form button[type=submit]'), true);
    await send(pageA, 'Still here after a restart.');
    await waitForTalk(pageA, 'ann', 'Still here after a restart.');
    assert.deepEqual((await talks(pageA)).map((m) => [m.sender, m.text]),
      [...historyBefore, ['ann', 'Still here after a restart.']]);

    // The room and its history were kept in the data directory: over HTTP ...
    const res = await fetch(`${server.url}/api/rooms/${roomId}`, { signal: AbortSignal.timeout(5000) });
    assert.equal(res.status, 200);
    const detail = await res.json();
    assert.equal(detail.name, ROOM_NAME);
    assert.deepEqual(detail.members, ['ann']);
    assert.deepEqual(detail.history.filter((m) => m.type === 'TALK').map((m) => [m.sender, m.message]),
      [...historyBefore, ['ann', 'Still here after a restart.']]);

    // ... and on the page of a newcomer (a fresh browser profile), who has not joined.
    const ctxC = await newContext();
    let failure = null;
    try {
      const pageC = await newPage(ctxC, 'newcomer');
      await pageC.goto(server.url + '/');
      const row = pageC.locator('#room-list li a', { hasText: ROOM_NAME });
      await row.waitFor();
      assert.equal(await row.locator('.badge').textContent(), '1 member');
      await row.click();
      await waitForState(pageC, 'connected');
      await eventually('the newcomer sees the history', async () =>
        assert.deepEqual((await talks(pageC)).map((m) => [m.sender, m.text]),
          [...historyBefore, ['ann', 'Still here after a restart.']]));
      assert.equal(await pageC.isVisible('#join-form'), true);
      assert.deepEqual(await members(pageC), { names: ['ann'], count: '1' });
      await shoot(pageC, 'room-newcomer.png');
    } catch (e) {
      failure = e;
      throw e;
    } finally {
      // A context that will not close must not hide why the step failed (a CI run once
      // reported only the close's timeout).
      await within(ctxC.close(), WAIT, "the newcomer's context to close").catch((e) => {
        if (!failure) throw e;
        console.error(`also: ${e.message}`);
      });
    }
    await shoot(pageA, 'room-ann-after-restart.png');
  });

  step('no dialog opened and no script error on any page', async () => {
    assert.deepEqual(dialogs, []);
    assert.deepEqual(pageErrors, []);
  });
});
