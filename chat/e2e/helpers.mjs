// Helpers shared by the browser tests (chat.test.mjs, cluster.test.mjs): bounded waits, what a
// room page shows, the actions people take on it, and the browser contexts and pages the tests
// drive (Debian's Chromium through playwright-core; the browser itself is launched by a test).
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
export const WAIT = 10_000; // any one thing the page should show soon
export const LABEL = { connecting: 'connecting…', connected: 'connected', reconnecting: 'reconnecting…' };

/** `promise`, or a rejection naming `what` once `ms` have passed. */
export function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Polls `fn` until it returns without throwing (and not `false`), at most `timeout` ms. */
export async function eventually(what, fn, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      // One attempt may not outlast the deadline either (a page call that never settles).
      const left = Math.max(deadline - Date.now(), 100);
      const value = await within(Promise.resolve().then(fn), left, `one check of whether ${what}`);
      if (value !== false) return value;
      last = new Error('not yet');
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const err = new Error(`timed out after ${timeout} ms waiting until ${what}: ${last && last.message}`);
      err.cause = last;
      throw err;
    }
    await sleep(100);
  }
}

/** What the page shows in the messages area. */
export function messages(page) {
  return page.$$eval('#messages > li', (lis) => lis.map((li) => ({
    id: Number(li.dataset.id),
    type: (li.className.match(/\bmsg-(\w+)/) || [])[1],
    sender: li.querySelector('.sender') ? li.querySelector('.sender').textContent : null,
    text: li.querySelector('.text') ? li.querySelector('.text').textContent : null,
    mine: li.classList.contains('mine'),
  })));
}

export const talks = async (page) => (await messages(page)).filter((m) => m.type === 'talk');
export const notices = async (page, text) => (await messages(page)).filter((m) => m.type !== 'talk' && m.text === text);

export async function members(page) {
  return {
    names: await page.$$eval('#member-list > li', (lis) => lis.map((li) => li.textContent)),
    count: await page.textContent('#member-count'),
  };
}

export async function connState(page) {
  return page.$eval('#conn-state', (e) => ({ text: e.textContent, className: e.className }));
}

export async function waitForState(page, state, timeout = WAIT) {
  return eventually(`the page shows "${LABEL[state]}"`, async () => {
    const s = await connState(page);
    assert.equal(s.text, LABEL[state]);
    assert.equal(s.className, `conn conn-${state}`);
  }, timeout);
}

/** Every text the connection indicator showed, in order (recorded in the page). */
export const stateLog = (page) => page.evaluate(() => window.__connStates.slice());

export async function waitForTalk(page, sender, text, timeout = WAIT) {
  return eventually(`${sender}'s ${JSON.stringify(text)} shows`, async () => {
    const found = (await talks(page)).find((m) => m.sender === sender && m.text === text);
    assert.ok(found, 'not shown yet');
    return found;
  }, timeout);
}

export async function send(page, text) {
  await page.fill('#message', text);
  await page.click('#send-form button[type=submit]');
  await eventually('the composer is cleared', async () => assert.equal(await page.inputValue('#message'), ''));
}

export async function join(page, nickname) {
  await page.fill('#nickname', nickname);
  await page.click('#join-form button[type=submit]');
  await page.waitForSelector('#send-form:not([hidden])', { timeout: WAIT });
  assert.equal(await page.textContent('#me'), nickname);
  assert.equal(await page.isHidden('#join-form'), true);
}

/** A screenshot of `page` into `dir`/`name`; the file's path. */
export async function shoot(dir, page, name) {
  const file = path.join(dir, name);
  await page.screenshot({ path: file });
  return file;
}

/**
 * A new browser context (its own profile) with the init scripts the tests rely on: the
 * connection indicator's texts are recorded in `window.__connStates`, and with `noWebSocket`
 * the pages have no WebSocket at all (the chat must then work over its SockJS fallback).
 */
export async function newContext(browser, { noWebSocket = false } = {}) {
  const ctx = await within(
    browser.newContext({ viewport: { width: 1100, height: 640 }, locale: 'en-US' }),
    WAIT,
    'a new browser context',
  );
  ctx.setDefaultTimeout(WAIT);
  if (noWebSocket) {
    await within(ctx.addInitScript(() => {
      try {
        delete window.WebSocket;
      } catch (e) {
        // not configurable: overwritten below
      }
      window.WebSocket = undefined;
    }), WAIT, 'the init script that takes WebSocket away');
  }
  // Records every text the connection indicator shows (room pages only).
  await within(ctx.addInitScript(() => {
    window.__connStates = [];
    const record = () => {
      const el = document.getElementById('conn-state');
      const text = el ? el.textContent : null;
      if (text !== null && window.__connStates[window.__connStates.length - 1] !== text) {
        window.__connStates.push(text);
      }
    };
    new MutationObserver(record).observe(document, { subtree: true, childList: true, characterData: true });
  }), WAIT, 'the init script to be added');
  return ctx;
}

/** A new page in `ctx` for `who`: its dialogs (dismissed) and script errors are collected. */
export async function newPage(ctx, who, { dialogs, pageErrors }) {
  const page = await within(ctx.newPage(), WAIT, `a new page for ${who}`);
  page.on('dialog', (d) => {
    dialogs.push(`${who}: ${d.type()} ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
  return page;
}

/**
 * The steps of one scenario: `step(name, fn)` is a `test` that is skipped once an earlier step
 * failed; a failing step leaves a screenshot of each page `pages()` names (`failed-WHO.png` in
 * `artifacts`).
 */
export function stepper({ artifacts, pages, timeout = 90_000 }) {
  let failed = false;
  return function step(name, fn) {
    test(name, { timeout }, async (t) => {
      if (failed) {
        t.skip('an earlier step failed');
        return;
      }
      try {
        await fn(t);
      } catch (e) {
        failed = true;
        for (const [who, page] of pages()) {
          if (page && !page.isClosed()) {
            await within(page.screenshot({ path: path.join(artifacts, `failed-${who}.png`) }), WAIT, 'a screenshot')
              .catch(() => {});
          }
        }
        throw e;
      }
    });
  };
}
