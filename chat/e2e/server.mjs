// The sockeye-chat server under test: started on a fixed port with a data directory (or, as a
// cluster node, with its --relay and --database among `args`), stopped with SIGTERM (as an
// operator would), started again on the same port and directory.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** `promise`, or a rejection naming `what` once `ms` have passed. */
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A port nothing listens on right now (the kernel's pick). */
export function freePort() {
  return within(new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  }), 5000, 'a free port');
}

export class ChatServer {
  /**
   * @param {object} o
   * @param {string} o.bin      the sockeye-chat binary
   * @param {number} o.port     HTTP + WebSocket port (127.0.0.1)
   * @param {string} [o.dataDir] --data-dir (none: the server's default, or what `args` say)
   * @param {string[]} [o.args] more arguments (e.g. --node-id, --relay, --database)
   * @param {string} [o.tlsDir] serve https/wss with DIR/server.pem and DIR/server.key
   *   (scripts/test-ca.sh); node's own requests then need NODE_EXTRA_CA_CERTS=DIR/ca.pem
   * @param {RegExp} [o.readyLog] after it answers HTTP, start also waits until this run's log
   *   matches this (e.g. the relay's "external broker available")
   * @param {string} [o.name]   what messages call it (default "the server")
   * @param {string} o.logFile  stdout and stderr of every run are appended here
   * @param {string} [o.pidFile] the running server's pid, for the runner's clean-up trap
   */
  constructor(o) {
    Object.assign(this, o);
    this.child = null;
    this.exited = null; // a promise of the exit, while running
    this.starts = 0;
    this.name = this.name || 'the server';
  }

  /** The running server's pid (null when stopped). */
  get pid() {
    return this.child ? this.child.pid : null;
  }

  get url() {
    return `${this.tlsDir ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /**
   * Starts the server and waits (at most `timeoutMs`) until it answers GET /api/rooms (and,
   * with `readyLog`, until its log says so).
   */
  async start(timeoutMs = 15_000) {
    if (this.child) throw new Error(`${this.name} is already running`);
    this.starts += 1;
    const log = fs.openSync(this.logFile, 'a');
    fs.writeSync(log, `\n===== e2e: start #${this.starts} at ${new Date().toISOString()} =====\n`);
    const logStart = fs.fstatSync(log).size;
    const args = [
      '--listen', `127.0.0.1:${this.port}`,
      '--stomp-listen', 'off',
      ...(this.dataDir ? ['--data-dir', this.dataDir] : []),
      '--workers', '2',
      ...(this.tlsDir
        ? ['--tls-cert', `${this.tlsDir}/server.pem`, '--tls-key', `${this.tlsDir}/server.key`]
        : []),
      ...(this.args || []),
    ];
    // Every HTTP request and socket event with its time in the log (artifacts/server.log): a
    // stalled step can then be placed against what the server saw.
    const env = { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info,sockeye::server=debug' };
    const child = spawn(this.bin, args, { stdio: ['ignore', log, log], env });
    fs.closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    if (this.pidFile) fs.writeFileSync(this.pidFile, `${child.pid}\n`);
    let exit = null;
    this.exited.then((e) => { exit = e; });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exit) {
        this.child = null;
        throw new Error(`${this.name} exited at start (${JSON.stringify(exit)}): see ${this.logFile}`);
      }
      try {
        const res = await fetch(this.url + '/api/rooms', { signal: AbortSignal.timeout(1000) });
        if (res.status === 200 && (!this.readyLog || this.readyLog.test(this.logSince(logStart)))) return;
      } catch (e) {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await this.stop();
        const what = this.readyLog ? ` (and log ${this.readyLog})` : '';
        throw new Error(`${this.name} did not answer${what} within ${timeoutMs} ms: see ${this.logFile}`);
      }
      await sleep(100);
    }
  }

  /** What the log file holds from byte `offset` on. */
  logSince(offset) {
    const fd = fs.openSync(this.logFile, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.max(size - offset, 0));
      fs.readSync(fd, buf, 0, buf.length, offset);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited within `timeoutMs`. */
  async stop(timeoutMs = 10_000) {
    const child = this.child;
    if (!child) return null;
    this.child = null;
    child.kill('SIGTERM');
    // A cancelled timer: a pending one would keep node alive for `timeoutMs` after the test.
    const cancel = new AbortController();
    const timer = sleep(timeoutMs, 'timeout', { signal: cancel.signal }).catch(() => null);
    let result = await Promise.race([this.exited, timer]);
    cancel.abort();
    if (result === 'timeout') {
      child.kill('SIGKILL');
      result = await within(this.exited, timeoutMs, `${this.name} (pid ${child.pid}) to exit after SIGKILL`);
      result.killed = true;
    }
    if (this.pidFile) fs.rmSync(this.pidFile, { force: true });
    return result;
  }

  /** At exit, whatever happened: no server is left behind. */
  killNow() {
    if (this.child) this.child.kill('SIGKILL');
  }
}
