// Handler loading for Lamina's Node.js runtime, with AWS's resolution rules and error types,
// and the `awslambda` global (response streaming) AWS's runtime gives functions.

import module, { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import {
  HandlerNotFound,
  ImportModuleError,
  InvalidStreamingOperation,
  MalformedHandlerName,
  UserCodeSyntaxError,
} from './errors.mjs';

export const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
export const HANDLER_HIGHWATERMARK = Symbol.for(
  'aws.lambda.runtime.handler.streaming.highWaterMark',
);
export const STREAM_RESPONSE = 'response';

// Resolved as if required by the runtime's entry point, which is what a missing module's
// "Require stack" names (on Lambda, /var/runtime/index.mjs).
const requireFromRuntime = createRequire(new URL('bootstrap.mjs', import.meta.url));

function requireIfExists(file) {
  return fs.existsSync(file) ? requireFromRuntime(file) : undefined;
}

async function importIfExists(file) {
  if (!fs.existsSync(file)) return undefined;
  const url = pathToFileURL(file).href;
  try {
    return await import(url);
  } catch (e) {
    // A bare import NODE_PATH would have found (a layer's package, the bundled SDK outside a
    // sandbox that shows it at /node_modules): hook the resolver and import again, under
    // another URL, since the failed one stays failed in the module map.
    if (e?.code !== 'ERR_MODULE_NOT_FOUND' || !findNodePathFromEsm()) throw e;
    return await import(`${url}?lamina-node-path`);
  }
}

let esmHooked = false;

/**
 * Let ES modules' bare imports fall back to NODE_PATH (the layers' node_modules, the bundled
 * SDK), as Lambda's do (see esm_paths.mjs). Registered only once an import has needed it:
 * the hooks run on a thread of their own that costs a cold start tens of milliseconds.
 * Returns whether hooks were newly registered.
 */
function findNodePathFromEsm() {
  if (esmHooked || typeof module.register !== 'function') return false;
  esmHooked = true;
  const dirs = (process.env.NODE_PATH ?? '').split(':').filter((d) => d.endsWith('/node_modules'));
  if (dirs.length === 0) return false;
  const parents = dirs.map((d) => pathToFileURL(path.join(path.dirname(d), 'lamina-esm.mjs')).href);
  module.register(new URL('esm_paths.mjs', import.meta.url), { data: { parents } });
  return true;
}

/** Whether the nearest package.json, looking up from `folder` to the task root, is ESM. */
function isModuleScope(folder, taskRoot) {
  for (;;) {
    if (folder.endsWith('/node_modules')) return false;
    const pj = path.join(folder, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, 'utf8'))?.type === 'module';
      } catch (e) {
        console.warn(
          `${pj} cannot be read, it will be ignored for ES module detection purposes.`,
          e,
        );
        return false;
      }
    }
    // The task root is as far as it goes: what lies above it is Lamina's, not the function's.
    const parent = path.dirname(folder);
    if (folder === taskRoot || parent === folder) return false;
    folder = parent;
  }
}

async function loadModule(taskRoot, moduleRoot, moduleName) {
  const base = path.resolve(taskRoot, moduleRoot, moduleName);
  try {
    const extensionless = requireIfExists(base);
    if (extensionless) return extensionless;
    const esm = isModuleScope(path.dirname(base), taskRoot);
    if (!esm) {
      const cjs = requireIfExists(base + '.js');
      if (cjs) return cjs;
    }
    const loaded =
      (esm && (await importIfExists(base + '.js'))) ||
      (await importIfExists(base + '.mjs')) ||
      requireIfExists(base + '.cjs');
    if (loaded) return loaded;
    // Last, a package name resolved as Node does (node_modules, then NODE_PATH).
    const resolved = requireFromRuntime.resolve(moduleName, { paths: [taskRoot, moduleRoot] });
    return requireFromRuntime(resolved);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e?.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }
}

export async function loadHandler(taskRoot, fullHandler) {
  if (fullHandler.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root ` +
        'directories in handler names.',
    );
  }
  const moduleAndHandler = path.basename(fullHandler);
  const moduleRoot = fullHandler.substring(0, fullHandler.indexOf(moduleAndHandler));
  const match = /^([^.]*)\.(.*)$/.exec(moduleAndHandler);
  if (match === null) throw new MalformedHandlerName('Bad handler');
  const app = await loadModule(taskRoot, moduleRoot, match[1]);
  const handler = match[2].split('.').reduce((obj, key) => obj && obj[key], app);
  if (!handler) throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  if (typeof handler !== 'function') throw new HandlerNotFound(`${fullHandler} is not a function`);
  return handler;
}

// Response streaming (awslambda.streamifyResponse): what the handler writes goes to the
// Runtime API as it writes it (client.mjs `stream`), in Lambda's streaming response mode. The
// request starts with the first write (or the end), so the content type can be set until then.

/**
 * The `responseStream` a streaming handler writes to. `open(contentType)` starts the streamed
 * request and returns its writer; `stream.wire()` is that writer, started if need be.
 */
export function makeResponseStream(highWaterMark, open) {
  let wire = null;
  const stream = new Writable({
    highWaterMark,
    write(chunk, _encoding, done) {
      stream.wire().write(chunk, done);
    },
  });
  stream.contentType = 'application/octet-stream';
  stream.setContentType = (type) => {
    if (wire !== null) throw new InvalidStreamingOperation('Cannot set content-type, too late.');
    stream.contentType = type;
  };
  stream.started = () => wire !== null;
  stream.wire = () => {
    if (wire === null) {
      wire = open(String(stream.contentType).replace(/[^\x20-\x7e]/g, ''));
      const before = stream._onBeforeFirstWrite;
      stream._onBeforeFirstWrite = undefined;
      if (before) before((data) => wire.write(Buffer.from(data), noop));
    }
    return wire;
  };
  return stream;
}

function noop() {}

class HttpResponseStream {
  static from(underlyingStream, prelude) {
    underlyingStream.setContentType('application/vnd.awslambda.http-integration-response');
    // Lambda's prelude: the metadata's JSON, then 8 NUL bytes, before the body.
    const metadata = JSON.stringify(prelude ?? {});
    underlyingStream._onBeforeFirstWrite = (write) => {
      write(metadata);
      write(new Uint8Array(8));
    };
    return underlyingStream;
  }
}

export function installAwsLambdaGlobal() {
  const off = process.env.AWS_LAMBDA_NODEJS_NO_GLOBAL_AWSLAMBDA;
  if (off === '1' || off === 'true') return;
  globalThis.awslambda = {
    streamifyResponse(handler, options) {
      handler[HANDLER_STREAMING] = STREAM_RESPONSE;
      if (typeof options?.highWaterMark === 'number') {
        handler[HANDLER_HIGHWATERMARK] = parseInt(options.highWaterMark);
      }
      return handler;
    },
    HttpResponseStream,
  };
}

