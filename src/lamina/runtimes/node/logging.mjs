// Logging of Lamina's Node.js runtime, as on Lambda: console.* write one line each to stdout,
// synchronously, `${timestamp}\t${requestId}\t${LEVEL}\t${message}` (or one JSON object).

import util from 'node:util';
import { formatForLog, intoError } from './errors.mjs';

export const REQUEST_ID = Symbol.for('aws.lambda.runtime.requestId');

const LEVELS = {
  TRACE: { name: 'TRACE', priority: 1 },
  DEBUG: { name: 'DEBUG', priority: 2 },
  INFO: { name: 'INFO', priority: 3 },
  WARN: { name: 'WARN', priority: 4 },
  ERROR: { name: 'ERROR', priority: 5 },
  FATAL: { name: 'FATAL', priority: 6 },
};

function jsonErrorReplacer(_key, value) {
  if (value instanceof Error) {
    return Object.assign(
      {
        errorType: value?.constructor?.name ?? 'UnknownError',
        errorMessage: value.message,
        stackTrace: typeof value.stack === 'string' ? value.stack.split('\n') : value.stack,
      },
      value,
    );
  }
  return value;
}

function jsonLine(level, message, params) {
  const entry = {
    timestamp: new Date().toISOString(),
    level: level.name,
    requestId: globalThis[REQUEST_ID],
  };
  if (params.length === 0) {
    entry.message = message;
    try {
      return JSON.stringify(entry, jsonErrorReplacer);
    } catch {
      entry.message = util.format(entry.message);
      return JSON.stringify(entry);
    }
  }
  entry.message = util.format(message, ...params);
  for (const param of [message, ...params]) {
    if (param instanceof Error) {
      entry.errorType = param?.constructor?.name ?? 'UnknownError';
      entry.errorMessage = param.message;
      entry.stackTrace = typeof param.stack === 'string' ? param.stack.split('\n') : [];
      break;
    }
  }
  return JSON.stringify(entry);
}

/**
 * Replaces console.* with Lambda's: one record per call, written synchronously to stdout, in
 * the format AWS_LAMBDA_LOG_FORMAT asks for (text unless JSON), filtered by
 * AWS_LAMBDA_LOG_LEVEL. Returns the function the runtime logs its own errors with.
 */
export function patchConsole() {
  const json = process.env.AWS_LAMBDA_LOG_FORMAT?.toUpperCase() === 'JSON';
  const minimum = LEVELS[process.env.AWS_LAMBDA_LOG_LEVEL?.toUpperCase()] ?? LEVELS.TRACE;
  const stdout = process.stdout;
  const write = json
    ? (level, message, params) => {
        stdout.write(jsonLine(level, message, params).replace(/\n/g, '\r') + '\n');
      }
    : (level, message, params) => {
        // Before the first invocation the request id is `undefined`, printed as such.
        const time = new Date().toISOString();
        const text = util.format(message, ...params);
        const line = `${time}\t${globalThis[REQUEST_ID]}\t${level.name}\t${text}`;
        // One record per call: a multi-line message stays one line (Lambda's convention).
        stdout.write(line.replace(/\n/g, '\r') + '\n');
      };
  const make = (level) =>
    level.priority >= minimum.priority
      ? (message, ...params) => write(level, message, params)
      : () => {};
  console.trace = make(LEVELS.TRACE);
  console.debug = make(LEVELS.DEBUG);
  console.info = make(LEVELS.INFO);
  console.log = console.info;
  console.warn = make(LEVELS.WARN);
  console.error = make(LEVELS.ERROR);
  console.fatal = (message, ...params) => write(LEVELS.FATAL, message, params);
  // How the runtime logs an error itself: (message, error).
  return json
    ? (_message, err) => console.error(intoError(err))
    : (message, err) => console.error(message, formatForLog(intoError(err)));
}

