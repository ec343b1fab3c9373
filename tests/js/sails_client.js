#!/usr/bin/env node
// Drives real Socket.IO clients for the Python integration tests: unmodified sails.io.js 1.2.1
// over socket.io-client 2.x (EIO=3), and raw socket.io-client 2.x and 4.x sockets.
//
//   node tests/js/sails_client.js        (commands on stdin, one JSON object a line)
//
// It prints `READY {"node": ..., "versions": {...}}` once loaded, then one JSON object a line on
// stdout: a reply to every command (`{"id": N, "type": "ok" | "sent" | "state" | "fail", ...}`),
// later results of commands (`{"id": N, "type": "response" | "ack", ...}`), and what a client
// saw (`{"client": C, "type": "connect" | "disconnect" | "connect_error" | "event" | "ping"}`).
// Library logging goes to stderr, never stdout. Exits 0 on SIGTERM or when stdin closes.
//
// Commands (every one carries "id"; "client" names a socket the driver holds):
//   {"op": "sails", "client", "url", "query"?, "headers"?, "listen"?: [event], "requests"?: [request]}
//       io.sails.connect(url): the listeners are bound and the requests made before the socket
//       has connected (sails.io.js queues them); each queued request answers with its own "id".
//   {"op": "sio", "client", "version": 2 | 4, "url", "query"?, "headers"?, "auth"?, "listen"?: [event]}
//       a raw socket.io-client socket, websocket transport only, no reconnection.
//   Both take "transports": a list (["polling"], ["polling", "websocket"]) instead of the
//   driver's ["websocket"], or null for the library's default (no transports option at all,
//   so polling first, then the upgrade). Such a client reports "upgrade" {transport} when its
//   Engine.IO connection moves to another transport, and "state" says its transport.
//   Both take "reconnect": true to keep the library's own reconnection with its default
//   settings (sails.io.js: `reconnection: true`, as a Sails app sets it), and "rejoin":
//   {"url", "data", "room"?} to make that virtual POST on every connect, as an app's connect
//   handler does (a reconnected socket is a new socket, in no room). With "room", a client
//   that saw that room's history position recovers what it missed from there once re-joined
//   (the roomcast:recover event). Reports: "reconnect_attempt", "rejoined" {sid, status},
//   "recovered" {body}; every report of such a client carries "at" (ms since the epoch).
//   "headers": sent with the WebSocket handshake (sails.io.js: initialConnectionHeaders;
//   socket.io-client: extraHeaders), as a Node client can (a browser sends its cookie itself).
//   {"op": "request", "client", "via": "get"|"post"|"put"|"patch"|"delete"|"request",
//    "method"?, "url", "data"?, "headers"?}        (sails sockets)
//   {"op": "emit", "client", "event", "args": [...], "ack": bool}       (raw sockets)
//   {"op": "busy", "client", "event", "args", "everyMs"}  emit with an ack every everyMs ms
//   {"op": "idle", "client"}                 stop that; replies {"sent": N, "acked": M}
//   {"op": "on", "client", "event"}
//   {"op": "state", "client"}
//   {"op": "disconnect", "client"}          (the client's own disconnect())
//   {"op": "close", "client"}               (forget the client, closing it if need be)
'use strict';

const path = require('path');

const write = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
// sails.io.js logs with console.log: keep stdout for the protocol.
console.log = console.info = console.warn = console.error = console.debug = toStderr;

const sio2 = require('socket.io-client');
const sio4 = require('socket.io-client-v4');
const sailsIo = require('sails.io.js')(sio2);
sailsIo.sails.autoConnect = false; // no eager io.socket: every socket is made on command
sailsIo.sails.environment = 'production'; // no connection banners
sailsIo.sails.reconnection = false;

function version(pkg) {
  return require(path.join(pkg, 'package.json')).version;
}

const clients = new Map(); // name -> {kind: "sails" | "sio", socket, raw}

function report(client, type, extra) {
  const stamped = clients.has(client) && clients.get(client).stamped ? { at: Date.now() } : {};
  write(Object.assign({ client, type }, stamped, extra || {}));
}

// What an app does on every connect: join its room again with a virtual POST (`post(url, data,
// done(status))`), then, where the room keeps history, catch up from the last position the
// client saw (roomcast:recover). `raw()` is the socket.io-client socket carrying it.
function rejoinOnConnect(name, entry, rejoin, raw, post) {
  return () => {
    const position = entry.position;
    post(rejoin.url, rejoin.data, (status) => {
      report(name, 'rejoined', { sid: raw().id, status });
      if (!position || status !== 200 || !rejoin.room) return;
      const arg = Object.assign({ room: rejoin.room }, position);
      raw().emit('roomcast:recover', arg, (jwr) => report(name, 'recovered', { body: jwr && jwr.body }));
    });
  };
}

// History positions ride as an extra last argument: {"roomcast": {"history": {room: pos}}}.
function notePosition(entry, room, args) {
  const last = args[args.length - 1];
  const pos = last && last.roomcast && last.roomcast.history && last.roomcast.history[room];
  if (pos) entry.position = { epoch: pos.epoch, offset: pos.offset };
}

// What a callback got, in JSON: an Error becomes {error: message}.
function plain(value) {
  if (value instanceof Error) return { error: value.message };
  return value === undefined ? null : value;
}

function watch(name, raw, events) {
  raw.on('connect', () => report(name, 'connect', { sid: raw.id }));
  raw.on('disconnect', (reason) => report(name, 'disconnect', { reason: String(reason) }));
  raw.on('connect_error', (err) => report(name, 'connect_error', { message: String(err && err.message || err) }));
  raw.on('error', (err) => report(name, 'error', { message: String(err && err.message || err) }));
  for (const event of events || []) listen(name, raw, event);
}

function chooseTransports(opts, cmd) {
  if (!('transports' in cmd)) return;
  if (cmd.transports === null) delete opts.transports;
  else opts.transports = cmd.transports;
}

// Engine.IO's transport changes (the upgrade from polling), whichever engine the manager opens.
function watchEngine(name, raw) {
  const manager = raw.io;
  const bind = () => {
    const engine = manager.engine;
    if (!engine || engine.__watched) return;
    engine.__watched = true;
    engine.on('upgrade', (transport) => report(name, 'upgrade', { transport: transport.name }));
  };
  bind();
  manager.on('open', bind);
}

function listen(name, target, event) {
  target.on(event, (...args) => report(name, 'event', { event, args: args.map(plain) }));
}

function sailsRequest(id, socket, cmd) {
  const done = (body, jwr) => {
    write({
      id,
      type: 'response',
      // The callback's arguments as sails.io.js passes them: (body, JWR) on a response,
      // (Error, {body, statusCode, headers}) when the socket disconnected first.
      body: plain(body),
      bodyIsError: body instanceof Error,
      jwr: jwr && typeof jwr.toPOJO === 'function' ? jwr.toPOJO() : plain(jwr),
      jwrIsJWR: !!(jwr && typeof jwr.toPOJO === 'function'),
      jwrError: jwr && jwr.error ? jwr.error.message : null,
    });
  };
  const connected = socket.isConnected();
  const via = cmd.via || 'request';
  if (via === 'request') {
    const opts = { method: cmd.method, url: cmd.url, headers: cmd.headers };
    if (cmd.data !== undefined) opts.data = cmd.data;
    socket.request(opts, done);
  } else {
    socket[via](cmd.url, cmd.data, done);
  }
  return connected;
}

function handle(cmd) {
  const { id, op } = cmd;
  const name = cmd.client;
  const entry = clients.get(name);
  switch (op) {
    case 'sails': {
      const reconnection = !!cmd.reconnect;
      const opts = { url: cmd.url, multiplex: false, transports: ['websocket'], reconnection };
      chooseTransports(opts, cmd);
      if (cmd.query) opts.query = cmd.query;
      if (cmd.headers) opts.initialConnectionHeaders = cmd.headers;
      const socket = sailsIo.sails.connect(opts);
      const entry = { kind: 'sails', socket, stamped: reconnection || !!cmd.rejoin };
      clients.set(name, entry);
      // Bound on the SailsSocket: sails.io.js replays them onto the raw socket.
      for (const event of cmd.listen || []) listen(name, socket, event);
      socket.on('connect', () => report(name, 'connect', { sid: socket._raw.id }));
      if ('transports' in cmd && socket._raw) watchEngine(name, socket._raw);
      socket.on('disconnect', (reason) => report(name, 'disconnect', { reason: String(reason) }));
      if (reconnection) {
        socket._raw.io.on('reconnect_attempt', (attempt) => report(name, 'reconnect_attempt', { attempt }));
      }
      if (cmd.rejoin) {
        if (cmd.rejoin.room) {
          // sails.io.js binds listeners on its raw socket.io-client 2 socket (no onAny there).
          for (const event of cmd.listen || []) {
            socket.on(event, (...args) => notePosition(entry, cmd.rejoin.room, args));
          }
        }
        const post = (url, data, done) => socket.post(url, data, (body, jwr) => done(jwr && jwr.statusCode));
        socket.on('connect', rejoinOnConnect(name, entry, cmd.rejoin, () => socket._raw, post));
      }
      const queued = (cmd.requests || []).map((req) => ({ id: req.id, connected: sailsRequest(req.id, socket, req) }));
      write({ id, type: 'ok', queued, queueLength: (socket.requestQueue || []).length });
      return;
    }
    case 'sio': {
      const opts = { transports: ['websocket'], forceNew: true };
      chooseTransports(opts, cmd);
      if (!cmd.reconnect) opts.reconnection = false;
      if (cmd.query) opts.query = cmd.query;
      if (cmd.headers) opts.extraHeaders = cmd.headers;
      if (cmd.auth) opts.auth = cmd.auth; // socket.io-client 4: sent with CONNECT
      const raw = cmd.version === 4 ? sio4.io(cmd.url, opts) : sio2(cmd.url, opts);
      const entry = { kind: 'sio', socket: raw, stamped: !!cmd.reconnect || !!cmd.rejoin };
      clients.set(name, entry);
      watch(name, raw, cmd.listen);
      if ('transports' in cmd) watchEngine(name, raw);
      if (cmd.version === 4) raw.io.on('ping', () => report(name, 'ping'));
      if (cmd.reconnect) raw.io.on('reconnect_attempt', (attempt) => report(name, 'reconnect_attempt', { attempt }));
      if (cmd.rejoin) {
        if (cmd.rejoin.room) raw.onAny((event, ...args) => notePosition(entry, cmd.rejoin.room, args));
        const post = (url, data, done) => {
          const ctx = { method: 'post', url, data, headers: {} };
          raw.emit('post', ctx, (jwr) => done(jwr && jwr.statusCode));
        };
        raw.on('connect', rejoinOnConnect(name, entry, cmd.rejoin, () => raw, post));
      }
      write({ id, type: 'ok' });
      return;
    }
  }
  if (!entry) {
    write({ id, type: 'fail', message: `no client ${name}` });
    return;
  }
  const { socket } = entry;
  switch (op) {
    case 'request':
      write({ id, type: 'sent', connected: sailsRequest(id, socket, cmd) });
      return;
    case 'emit': {
      const args = cmd.args || [];
      if (cmd.ack) socket.emit(cmd.event, ...args, (...reply) => write({ id, type: 'ack', args: reply.map(plain) }));
      else socket.emit(cmd.event, ...args);
      write({ id, type: 'sent' });
      return;
    }
    case 'busy': { // emit `event` with an ack every `everyMs` until "idle" (raw sockets)
      const args = cmd.args || [];
      entry.busy = { sent: 0, acked: 0 };
      const busy = entry.busy;
      busy.timer = setInterval(() => {
        busy.sent += 1;
        socket.emit(cmd.event, ...args, () => { busy.acked += 1; });
      }, cmd.everyMs);
      write({ id, type: 'ok' });
      return;
    }
    case 'idle': {
      const busy = entry.busy || { sent: 0, acked: 0 };
      clearInterval(busy.timer);
      write({ id, type: 'ok', sent: busy.sent, acked: busy.acked });
      return;
    }
    case 'on':
      listen(name, socket, cmd.event);
      write({ id, type: 'ok' });
      return;
    case 'state': {
      const connected = entry.kind === 'sails' ? socket.isConnected() : socket.connected;
      const raw = entry.kind === 'sails' ? socket._raw : socket;
      const engine = raw && raw.io && raw.io.engine;
      const transport = engine && engine.transport ? engine.transport.name : null;
      write({ id, type: 'state', connected, transport, sid: entry.kind === 'sails' ? socket._raw && socket._raw.id : socket.id });
      return;
    }
    case 'disconnect':
      socket.disconnect();
      write({ id, type: 'ok' });
      return;
    case 'close': // end of a test: whatever its state, the client goes away quietly
      clients.delete(name);
      closeQuietly(entry);
      write({ id, type: 'ok' });
      return;
    default:
      write({ id, type: 'fail', message: `unknown op ${op}` });
  }
}

function closeQuietly(entry) {
  if (entry.busy) clearInterval(entry.busy.timer);
  const raw = entry.kind === 'sails' ? entry.socket._raw : entry.socket;
  try {
    if (raw) raw.close();
  } catch (err) {
    toStderr('close failed:', err);
  }
}

function shutdown() {
  for (const entry of clients.values()) closeQuietly(entry);
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

let buffer = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  let nl;
  while ((nl = buffer.indexOf('\n')) >= 0) {
    const line = buffer.slice(0, nl).trim();
    buffer = buffer.slice(nl + 1);
    if (!line) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (err) {
      write({ type: 'fail', message: `not json: ${err.message}` });
      continue;
    }
    try {
      handle(cmd);
    } catch (err) {
      write({ id: cmd.id, type: 'fail', message: String(err && err.stack || err) });
    }
  }
});
process.stdin.on('end', shutdown);

process.stdout.write('READY ' + JSON.stringify({
  node: process.version,
  versions: {
    'sails.io.js': version('sails.io.js'),
    'socket.io-client': version('socket.io-client'),
    'socket.io-client-v4': version('socket.io-client-v4'),
  },
}) + '\n');
