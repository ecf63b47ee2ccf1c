// The Runtime API client of Lamina's Node.js runtime.
//
// A minimal HTTP/1.1 client over one keep-alive `node:net` socket rather than `node:http`: the
// Runtime API is a fixed, local peer, and node:http's request and response objects cost about
// four times the CPU per invoke that this whole round trip does. Responses come back in the
// order requests were written, each with a Content-Length (Lamina's server never chunks). A
// streamed response (`stream`) goes the other way chunked, written as the handler writes.

import net from 'node:net';
import {
  MessageChannel,
  Worker,
  isMainThread,
  receiveMessageOnPort,
  workerData,
} from 'node:worker_threads';

export const NEXT_PATH = '/2018-06-01/runtime/invocation/next';
const POLLER = 'lamina.runtime.poller';

export class ConnectionLost extends Error {}

export class RuntimeApiClient {
  constructor(address) {
    const colon = address.lastIndexOf(':');
    this.host = address.slice(0, colon).replace(/^\[|\]$/g, '');
    this.port = Number(address.slice(colon + 1));
    this.hostHeader = address;
    this.sock = null;
    this.connected = null; // a promise, settled once the socket is connected
    this.waiters = []; // one per request written and not yet answered, in order
    this.chunks = []; // received, not yet parsed
    this.size = 0; // their total length
    this.need = 0; // the length the response being read needs, once its head is known
    this.polling = false; // a GET /next is outstanding: nothing may be queued behind it
  }

  connect() {
    const sock = net.connect({ host: this.host, port: this.port, noDelay: true });
    this.sock = sock;
    this.connected = new Promise((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('close', () => reject(new ConnectionLost('Runtime API connection closed')));
    });
    this.connected.catch(() => {});
    sock.on('data', (chunk) => this._onData(chunk));
    sock.on('error', () => {}); // 'close' follows and reports it
    sock.on('close', () => this._onClose(sock));
    // Idle, the connection must not keep the event loop alive: the callback contract waits
    // for the loop to empty ('beforeExit'), and that must not count our own socket.
    sock.unref();
    return sock;
  }

  /** Sends one request; resolves to {status, headers, body} (headers lower-cased). */
  request(method, urlPath, body, headers) {
    const sock = this.sock || this.connect();
    let head = `${method} ${urlPath} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n`;
    if (headers !== undefined) {
      for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
    }
    if (body === undefined) {
      sock.write(head + '\r\n');
    } else if (typeof body === 'string') {
      sock.write(`${head}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    } else {
      sock.cork();
      sock.write(`${head}Content-Length: ${body.length}\r\n\r\n`);
      sock.write(body);
      sock.uncork();
    }
    if (this.waiters.length === 0) sock.ref();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /**
   * Starts a streamed POST (Lambda's streaming response mode, chunked), its head now. Returns
   * `write(buf, done)` (done once the socket takes it: backpressure), `end(trailers)` and
   * `answered`, the promise of the server's response once the stream has ended.
   */
  stream(urlPath, headers) {
    const sock = this.sock || this.connect();
    let head = `POST ${urlPath} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n`;
    for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
    sock.write(
      `${head}Lambda-Runtime-Function-Response-Mode: streaming\r\n` +
        'Transfer-Encoding: chunked\r\n' +
        'Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n',
    );
    if (this.waiters.length === 0) sock.ref();
    const answered = new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
    return {
      answered,
      write(buf, done) {
        if (buf.length === 0) return done();
        sock.cork();
        sock.write(`${buf.length.toString(16)}\r\n`);
        sock.write(buf);
        const flushed = sock.write('\r\n');
        sock.uncork();
        if (flushed || sock.destroyed) done();
        else sock.once('drain', () => done());
      },
      end(trailers) {
        let tail = '0\r\n';
        if (trailers !== undefined) {
          for (const name in trailers) tail += `${name}: ${trailers[name]}\r\n`;
        }
        sock.write(`${tail}\r\n`);
      },
    };
  }

  next() {
    this.polling = true;
    return this.request('GET', NEXT_PATH);
  }

  _onData(chunk) {
    // Chunks are only joined once a whole response is there: a 6 MB event arrives in many.
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size < this.need) return;
    let buf = this.chunks.length === 1 ? chunk : Buffer.concat(this.chunks, this.size);
    this.need = 0;
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) break;
      const lines = buf.latin1Slice(0, end).split('\r\n');
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i];
        const colon = line.indexOf(':');
        if (colon > 0) {
          headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
        }
      }
      const total = end + 4 + Number(headers['content-length'] || 0);
      if (buf.length < total) {
        this.need = total;
        break;
      }
      const response = {
        status: Number(lines[0].split(' ', 3)[1]),
        headers,
        body: buf.utf8Slice(end + 4, total),
      };
      buf = buf.subarray(total);
      const waiter = this.waiters.shift();
      if (this.waiters.length === 0) {
        this.polling = false;
        this.sock.unref();
      }
      if (waiter !== undefined) waiter.resolve(response);
    }
    this.chunks = buf.length === 0 ? [] : [buf];
    this.size = buf.length;
  }

  _onClose(sock) {
    if (this.sock !== sock) return;
    this.sock = null;
    this.chunks = [];
    this.size = 0;
    this.need = 0;
    this.polling = false;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(new ConnectionLost('Runtime API connection closed'));
  }
}

/**
 * The blocking poll, for when the function has work pending that Lambda would freeze: a worker
 * thread holds a second connection for GET /next while the main thread waits on Atomics.wait,
 * so none of the function's timers or callbacks run until the next invocation arrives.
 * Started on first need (booting a worker costs ~25 ms and a few MB), then kept.
 */
export class FrozenPoller {
  constructor(address) {
    this.signal = new Int32Array(new SharedArrayBuffer(4));
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.port.unref();
    this.worker = new Worker(new URL(import.meta.url), {
      workerData: { [POLLER]: { address, signal: this.signal, port: port2 } },
      transferList: [port2],
    });
    this.worker.unref();
  }

  /** Blocks the calling (main) thread until the next invocation arrives. */
  next() {
    this.port.postMessage(0);
    for (;;) {
      const seen = Atomics.load(this.signal, 0);
      const reply = receiveMessageOnPort(this.port);
      if (reply !== undefined) return reply.message;
      Atomics.wait(this.signal, 0, seen);
    }
  }
}

function workerMain() {
  const { address, signal, port } = workerData[POLLER];
  const client = new RuntimeApiClient(address);
  // The main thread is blocked until it hears from this thread: whatever happens, answer.
  const failed = (e) => reply({ status: 0, headers: {}, body: '', error: String(e) });
  process.on('uncaughtException', failed);
  port.on('message', () => client.next().then(reply, failed));
  function reply(message) {
    port.postMessage(message);
    Atomics.add(signal, 0, 1);
    Atomics.notify(signal, 0);
  }
}

if (!isMainThread && workerData?.[POLLER] !== undefined) workerMain();
