// sockjs-node echo server: the peer of Sockeye's SockJS benchmark (benches/scripts/sockjs.sh).
//
//   node server.js [127.0.0.1:8082]
//
// One SockJS service at /echo with sockjs-node's default settings (streaming limit 128 KiB,
// heart-beats every 25 s, disconnect delay 5 s), on node's own `http` server; every message
// comes back unchanged. Prints `listening on http://ADDR/echo`; SIGINT / SIGTERM stop it.
'use strict';

const http = require('http');
const sockjs = require('sockjs');

const [host, port] = (process.argv[2] || '127.0.0.1:8082').split(/:(?=\d+$)/);

const echo = sockjs.createServer({
    prefix: '/echo',
    log: () => {}, // no per-request logging
    // The iframe page is never asked for here; this only keeps the default CDN URL explicit.
    sockjs_url: 'https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js',
});
echo.on('connection', (conn) => {
    conn.on('data', (message) => conn.write(message));
});

const server = http.createServer();
echo.installHandlers(server);
server.listen(Number(port), host, () => {
    console.log(`sockjs-node ${require('sockjs/package.json').version} on node ${process.version}: ` +
        `listening on http://${host}:${port}/echo`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => process.exit(0));
}
