// Lamina's Node.js runtime: a plain client of the Lambda Runtime API (Node built-ins only).
//
// Started inside an execution environment as `node bootstrap.mjs`, with the code unpacked in
// LAMBDA_TASK_ROOT (the working directory) and the environment Lambda defines. It loads the
// handler named by _HANDLER, then loops: GET the next invocation, call
// `handler(event, context, callback)`, POST the result or the error. It behaves as AWS's own
// Node.js runtime (aws-lambda-nodejs-runtime-interface-client) does: the same handler
// resolution, context object, callback/async/succeed-fail-done contract, log line format, error
// shapes and Runtime.* error types, and the same exits on init errors and uncaught errors.
//
// One thing Lambda's platform does is done here instead: freezing. Lambda freezes the whole
// sandbox between invocations, so timers and sockets a handler leaves pending
// (`callbackWaitsForEmptyEventLoop = false`, or an async handler that leaves work behind) make
// no progress until the next invoke. When such work exists, this runtime waits for the next
// invocation *synchronously* (a worker thread holds the long poll while the main thread blocks
// on Atomics.wait: see client.mjs), which freezes the main event loop the same way. When
// nothing is pending (the usual case) the poll is an ordinary asynchronous request.
// Lamina's backends now freeze the environment too while the runtime waits for its next event
// (docs/security.md); this stays so that the runtime behaves the same where nothing freezes
// it (and so that nothing of the handler's runs between the poll and the freeze).
//
// The other modules: client.mjs (the Runtime API client), handler.mjs (loading the handler),
// errors.mjs (error types and shapes), logging.mjs (console.* as on Lambda).

import path from 'node:path';
import { ConnectionLost, FrozenPoller, RuntimeApiClient } from './client.mjs';
import {
  CallbackHandlerDeprecated,
  InvalidStreamingOperation,
  MalformedStreamingHandler,
  NodeJsExit,
  UnhandledPromiseRejection,
  errorResponse,
} from './errors.mjs';
import {
  HANDLER_HIGHWATERMARK,
  HANDLER_STREAMING,
  STREAM_RESPONSE,
  installAwsLambdaGlobal,
  loadHandler,
  makeResponseStream,
} from './handler.mjs';
import { REQUEST_ID, patchConsole } from './logging.mjs';

const INIT_ERROR_PATH = '/2018-06-01/runtime/init/error';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';
const ERROR_BODY_HEADER = 'Lambda-Runtime-Function-Error-Body';

let logError; // (message, error): how the runtime logs an error itself

function isThenable(value) {
  return value && value.then && typeof value.then === 'function';
}

/** Lambda's Node.js runtimes from nodejs24.x on refuse callback-style handlers at init (the
 * earlier ones accept them): the Lambda runtime is named in AWS_EXECUTION_ENV. */
function callbacksRemoved() {
  const m = /^AWS_Lambda_nodejs(\d+)\.x$/.exec(process.env.AWS_EXECUTION_ENV ?? '');
  return m !== null && Number(m[1]) >= 24;
}

class Runtime {
  constructor(address) {
    this.address = address;
    this.client = new RuntimeApiClient(address);
    this.poller = null; // FrozenPoller, started the first time something must be frozen
    this.handler = null;
    this.isAsync = false;
    this.streaming = false;
    this.highWaterMark = undefined;
    this.wire = null; // the streamed response in flight (client.mjs `stream`), if any
    this.invokeId = null; // the invocation uncaught errors are reported against
    this.exiting = false;
    // While set, a result is being posted by the runtime itself (a settled promise, the event
    // loop emptying), not from inside the function's code: it can wait, corked, to leave in
    // one write with the next GET /next.
    this.batch = false;
    this.corked = null;
    this.beforeExit = () => {};
    this.baseline = null;
    this.scheduleIteration = () => setImmediate(this.iterate);
    this.iterate = () => this._iterate();
  }

  async start() {
    logError = patchConsole();
    process.on('uncaughtException', (error) => {
      logError('Uncaught Exception', error);
      this.fatal(error, 129);
    });
    process.on('unhandledRejection', (reason, promise) => {
      const error = new UnhandledPromiseRejection(reason, promise);
      logError('Unhandled Promise Rejection', error);
      this.fatal(error, 128);
    });
    process.on('beforeExit', () => this.beforeExit());
    // What is active when the function has nothing pending: stdio, when it is a pipe.
    void process.stderr;
    this.baseline = process.getActiveResourcesInfo();
    this.client.connect();
    installAwsLambdaGlobal();
    const taskRoot = path.resolve(process.env.LAMBDA_TASK_ROOT || process.cwd());
    // A load error propagates to 'uncaughtException', as in AWS's runtime: logged, posted to
    // /init/error, then exit 129.
    const handler = await loadHandler(taskRoot, process.env._HANDLER ?? '');
    this.handler = handler;
    this.isAsync = handler.constructor?.name === 'AsyncFunction';
    const streaming = handler[HANDLER_STREAMING];
    if (streaming !== undefined && streaming !== null && streaming !== false) {
      if (streaming !== STREAM_RESPONSE) {
        throw new MalformedStreamingHandler('Only response streaming is supported.');
      }
      this.streaming = true;
      const hwm = parseInt(handler[HANDLER_HIGHWATERMARK]);
      this.highWaterMark = Number.isNaN(hwm) ? undefined : hwm;
    }
    if (!this.isAsync && !this.streaming && handler.length >= 3 && callbacksRemoved()) {
      throw new CallbackHandlerDeprecated(
        'Lambda does not support callback-based function handlers (event, context, ' +
          'callback) from Node.js 24 on: make the handler an async function that returns ' +
          'its result, or use nodejs22.x.',
      );
    }
    await this.client.connected;
    this.scheduleIteration();
  }

  /** An uncaught error: report it (init or invocation), then exit as AWS's runtime does. */
  fatal(error, code) {
    if (this.exiting) return;
    this.exiting = true;
    this._uncork();
    const response = errorResponse(error);
    const wire = this.wire;
    if (wire !== null) {
      // Mid-stream: the error ends the streamed response, in its trailers.
      wire.end(this._errorTrailers(response));
      wire.answered.then(
        () => process.exit(code),
        () => process.exit(code),
      );
      return;
    }
    const target = this.invokeId === null ? INIT_ERROR_PATH : this._errorPath(this.invokeId);
    // A GET /next may be parked on the main connection: nothing can be queued behind it.
    const client = this.client.polling ? new RuntimeApiClient(this.address) : this.client;
    client
      .request('POST', target, JSON.stringify(response), this._errorHeaders(response))
      .then(
        () => process.exit(code),
        () => process.exit(code),
      );
  }

  _errorPath(id) {
    return `/2018-06-01/runtime/invocation/${encodeURIComponent(id)}/error`;
  }

  _errorHeaders(response) {
    return {
      'Content-Type': 'application/json',
      [ERROR_TYPE_HEADER]: String(response.errorType).replace(/[^\x20-\x7e]/g, ''),
    };
  }

  // -- the loop -------------------------------------------------------------------------------

  _iterate() {
    if (this.exiting) return;
    const pending = this._hasPendingWork();
    if (pending && this.invokeId !== null) {
      this._uncork();
      this._frozenNext();
    } else {
      // The first poll ends the init phase, and the invocation that caused the cold start is
      // already waiting for it: there is no idle time to freeze. If the init left work
      // pending, the poller thread boots now, in parallel, so later polls need not wait for it.
      if (pending && this.poller === null) this.poller = new FrozenPoller(this.address);
      const next = this.client.next();
      this._uncork(); // the result (if corked) and the poll leave together
      next.then(
        (response) => this._dispatch(response),
        (e) => this._lost(e),
      );
    }
  }

  _batched(fn, arg) {
    this.batch = true;
    try {
      fn(arg);
    } finally {
      this.batch = false;
    }
  }

  _uncork() {
    const sock = this.corked;
    if (sock !== null) {
      this.corked = null;
      sock.uncork();
    }
  }

  /** Whether anything of the function's (timers, sockets, fs requests...) is pending. */
  _hasPendingWork() {
    const sock = this.client.sock;
    const refed = this.client.waiters.length > 0;
    if (sock !== null && refed) sock.unref();
    const active = process.getActiveResourcesInfo();
    if (sock !== null && refed) sock.ref();
    if (active.length === 0) return false;
    const ours = [...this.baseline];
    for (const kind of active) {
      const i = ours.indexOf(kind);
      if (i < 0) return true;
      ours.splice(i, 1);
    }
    return false;
  }

  _frozenNext() {
    const sock = this.client.sock;
    if (sock !== null && sock.writableLength > 0) {
      // The result must reach the server before this thread stops.
      sock.once('drain', this.iterate);
      return;
    }
    if (this.poller === null) this.poller = new FrozenPoller(this.address);
    const response = this.poller.next();
    if (response.error !== undefined) {
      this._lost(new ConnectionLost(response.error));
      return;
    }
    this._dispatch(response);
  }

  _lost(e) {
    if (this.exiting) return;
    if (e instanceof ConnectionLost) {
      // The environment is being shut down.
      this.exiting = true;
      process.exit(0);
    }
    throw e;
  }

  // -- one invocation -------------------------------------------------------------------------

  _dispatch(response) {
    if (response.status !== 200) {
      throw new Error(`Runtime API /invocation/next answered ${response.status}: ${response.body}`);
    }
    const headers = response.headers;
    const id = headers['lambda-runtime-aws-request-id'];
    if (!id) throw new Error('invocation id is missing or invalid');
    globalThis[REQUEST_ID] = id;
    this.invokeId = id;
    const trace = headers['lambda-runtime-trace-id'];
    if (trace) process.env._X_AMZN_TRACE_ID = trace;
    else delete process.env._X_AMZN_TRACE_ID;
    if (this.streaming) this._invokeStreaming(id, headers, response.body);
    else this._invoke(id, headers, response.body);
  }

  _invoke(id, headers, body) {
    const [callback, context, markCompleted] = this._callbackContext(id);
    const isAsync = this.isAsync;
    // If the event loop empties and nothing answered: a non-async handler that never called
    // back succeeds with null; an async one whose promise never settled fails.
    this.beforeExit = () => {
      markCompleted();
      if (isAsync) {
        const error = new NodeJsExit();
        logError('Invoke Error', error);
        this._batched((e) => this._postError(id, e), error);
      } else {
        this._batched((r) => this._postResult(id, r), null);
      }
    };
    try {
      const result = this.handler(
        JSON.parse(body),
        this._attachInvokeData(context, id, headers),
        callback,
      );
      if (isThenable(result)) {
        result
          .then(
            (value) => this._batched(context.succeed, value),
            (err) => this._batched(context.fail, err),
          )
          .catch(context.fail);
      }
    } catch (err) {
      callback(err);
    }
  }

  /** [callback, context (callback part), markCompleted]; only the first answer counts. */
  _callbackContext(id) {
    let waitForEmptyEventLoop = true;
    let completed = false;
    let finished = false;
    const complete = (result) => {
      if (completed) {
        console.error(
          'Invocation has already been reported as done. Cannot call complete more than once ' +
            'per invocation.',
        );
        return;
      }
      completed = true;
      this._postResult(id, result);
    };
    const fail = (err) => {
      logError('Invoke Error', err);
      this._postError(id, err);
    };
    const done = (err, result) => {
      this.beforeExit = noop;
      if (err !== undefined && err !== null) fail(err);
      else complete(result);
    };
    const callback = (err, result) => {
      this.beforeExit = noop;
      if (err !== undefined && err !== null) {
        fail(err);
      } else if (!waitForEmptyEventLoop) {
        complete(result);
      } else {
        this.beforeExit = () => setImmediate(() => this._batched(complete, result));
      }
    };
    const once = (fn) =>
      function () {
        if (!finished) {
          fn.apply(null, arguments);
          finished = true;
        }
      };
    const context = {
      get callbackWaitsForEmptyEventLoop() {
        return waitForEmptyEventLoop;
      },
      set callbackWaitsForEmptyEventLoop(value) {
        waitForEmptyEventLoop = value;
      },
      succeed: once((result) => done(null, result)),
      fail: once((err) => (err === undefined || err === null ? done('handled') : done(err, null))),
      done: once(done),
    };
    return [
      once(callback),
      context,
      () => {
        completed = true;
      },
    ];
  }

  /** The rest of the context object, in the order AWS's runtime adds its fields. */
  _attachInvokeData(context, id, headers) {
    const env = process.env;
    const deadline = Number(headers['lambda-runtime-deadline-ms']);
    context.functionVersion = env.AWS_LAMBDA_FUNCTION_VERSION;
    context.functionName = env.AWS_LAMBDA_FUNCTION_NAME;
    context.memoryLimitInMB = env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE;
    context.logGroupName = env.AWS_LAMBDA_LOG_GROUP_NAME;
    context.logStreamName = env.AWS_LAMBDA_LOG_STREAM_NAME;
    context.clientContext = parseHeaderJson(
      headers['lambda-runtime-client-context'],
      'ClientContext',
    );
    context.identity = parseHeaderJson(
      headers['lambda-runtime-cognito-identity'],
      'CognitoIdentity',
    );
    context.invokedFunctionArn = headers['lambda-runtime-invoked-function-arn'];
    context.awsRequestId = id;
    context.tenantId = headers['lambda-runtime-aws-tenant-id'];
    context.getRemainingTimeInMillis = () => deadline - Date.now();
    return context;
  }

  async _invokeStreaming(id, headers, body) {
    this.beforeExit = this.scheduleIteration;
    let stream;
    try {
      let waitForEmptyEventLoop = true;
      const context = {
        get callbackWaitsForEmptyEventLoop() {
          return waitForEmptyEventLoop;
        },
        set callbackWaitsForEmptyEventLoop(value) {
          waitForEmptyEventLoop = value;
        },
      };
      const urlPath = `/2018-06-01/runtime/invocation/${encodeURIComponent(id)}/response`;
      stream = makeResponseStream(this.highWaterMark, (type) =>
        (this.wire = this.client.stream(urlPath, { 'Content-Type': type })),
      );
      const result = this.handler(
        JSON.parse(body),
        stream,
        this._attachInvokeData(context, id, headers),
      );
      if (!isThenable(result)) {
        throw new InvalidStreamingOperation('Streaming does not support non-async handlers.');
      }
      if ((await result) !== undefined) console.warn('Streaming handlers ignore return values.');
      if (!stream.writableEnded) {
        throw new InvalidStreamingOperation('Response stream is not finished.');
      }
      if (!stream.writableFinished) await new Promise((resolve) => stream.once('finish', resolve));
      this.beforeExit = noop;
      this._endStream(stream.wire());
    } catch (err) {
      this.beforeExit = noop;
      logError('Invoke Error', err);
      if (stream?.started()) {
        // Failed mid-stream: the error goes in the trailers, its body base64-encoded.
        this._endStream(stream.wire(), this._errorTrailers(errorResponse(err)));
      } else {
        this._postError(id, err);
      }
    }
  }

  _errorTrailers(response) {
    return {
      [ERROR_TYPE_HEADER]: String(response.errorType).replace(/[^\x20-\x7e]/g, ''),
      [ERROR_BODY_HEADER]: Buffer.from(JSON.stringify(response)).toString('base64'),
    };
  }

  _endStream(wire, trailers) {
    if (this.exiting) return;
    this.wire = null;
    wire.end(trailers);
    wire.answered.catch((e) => this._lost(e));
    this.scheduleIteration();
  }

  // -- answers --------------------------------------------------------------------------------

  _postResult(id, result) {
    let body;
    try {
      body = JSON.stringify(result === undefined ? null : result);
    } catch {
      throw new Error('Unable to stringify response body');
    }
    this._post(id, 'response', body, { 'Content-Type': 'application/json' });
  }

  _postError(id, err) {
    const response = errorResponse(err);
    this._post(id, 'error', JSON.stringify(response), this._errorHeaders(response));
  }

  _post(id, kind, body, headers) {
    if (this.exiting) return;
    if (this.batch && this.corked === null) {
      this.corked = this.client.sock || this.client.connect();
      this.corked.cork();
    }
    const urlPath = `/2018-06-01/runtime/invocation/${encodeURIComponent(id)}/${kind}`;
    this.client.request('POST', urlPath, body, headers).catch((e) => this._lost(e));
    this.scheduleIteration();
  }
}

function noop() {}

function parseHeaderJson(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

const address = process.env.AWS_LAMBDA_RUNTIME_API;
if (!address) {
  process.stderr.write('AWS_LAMBDA_RUNTIME_API is not set\n');
  process.exit(1);
}
await new Runtime(address).start();

