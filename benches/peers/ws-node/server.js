// node `ws` echo server with permessage-deflate on: the peer of Sockeye's deflate echo
// benchmark (benches/scripts/deflate.sh).
//
//   node server.js [127.0.0.1:8083]
//
// `perMessageDeflate: true` is ws's own deflate with its defaults (zlib level and memory level
// defaults, context takeover when the client allows it, messages of 1024 bytes and up
// compressed, at most 10 zlib jobs at a time in libuv's thread pool). Every message comes back
// unchanged, as text or binary as it came. Prints `listening on ws://ADDR/`; SIGINT / SIGTERM
// stop it.
'use strict';

const { WebSocketServer } = require('ws');

const [host, port] = (process.argv[2] || '127.0.0.1:8083').split(/:(?=\d+$)/);

const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: true });
wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => {
    console.log(`ws ${require('ws/package.json').version} on node ${process.version}: ` +
        `listening on ws://${host}:${port}/`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => wss.close(() => process.exit(0)));
}
