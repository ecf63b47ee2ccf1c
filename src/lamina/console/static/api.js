// Every data call of the console: the same endpoints boto3 uses, same origin, with the
// session cookie and X-Lamina-Console: 1 (the server's CSRF guard) in place of a signature.
// A failed call throws ApiError carrying AWS's error type and message.

import { sign } from "./sigv4.js";

class ApiError extends Error {
  constructor(status, type, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.type = type || `HTTP${status}`;
  }
}

/** Fires when a call is refused because the session is over: the app goes back to sign-in. */
export const signedOut = new EventTarget();

// What authentication (not authorization) answers when the cookie no longer proves a key:
// none, expired, or its key deleted.
const SESSION_OVER = /^(MissingAuthenticationToken|ExpiredToken|UnrecognizedClient|InvalidSignature)/;

async function failure(resp) {
  const text = await resp.text();
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {
    body = { message: text.slice(0, 500) };
  }
  const type =
    resp.headers.get("x-amzn-ErrorType")?.split(":")[0] ||
    (body.__type || "").split("#").pop();
  const message = body.message || body.Message || body.errorMessage || resp.statusText;
  const error = new ApiError(resp.status, type, message);
  if (resp.status === 403 && SESSION_OVER.test(type)) {
    signedOut.dispatchEvent(new Event("signedout"));
  }
  return error;
}

/** One request with the session; the Response, or ApiError for a non-2xx answer. */
export async function call(method, path, { body, headers = {} } = {}) {
  let resp;
  try {
    resp = await fetch(path, {
      method,
      credentials: "same-origin",
      headers: { "X-Lamina-Console": "1", ...headers },
      body,
    });
  } catch (e) {
    throw new ApiError(0, "NetworkError", `The server did not answer (${e.message}).`);
  }
  if (!resp.ok) throw await failure(resp);
  return resp;
}

/** A GET answered with JSON (null for an empty body). */
export async function get(path) {
  const text = await (await call("GET", path)).text();
  return text ? JSON.parse(text) : null;
}

/** A JSON-protocol operation on POST / (CloudWatch Logs, EventBridge, CloudWatch). */
async function target(name, body, version = "1.1") {
  const resp = await call("POST", "/", {
    body: JSON.stringify(body || {}),
    headers: { "X-Amz-Target": name, "Content-Type": `application/x-amz-json-${version}` },
  });
  return resp.json();
}

export const logs = (op, body) => target(`Logs_20140328.${op}`, body);
export const events = (op, body) => target(`AWSEvents.${op}`, body);
export const cloudwatch = (op, body) => target(`GraniteServiceVersion20100801.${op}`, body, "1.0");

export const fn = (name) => `/2015-03-31/functions/${encodeURIComponent(name)}`;

// -- the session ------------------------------------------------------------------------

/** Who is signed in, or null. */
export async function session() {
  try {
    return await get("/console/session");
  } catch (e) {
    if (e.status === 403 || e.status === 401) return null;
    throw e;
  }
}

/** Sign in: the session request signed with the key typed in (the secret goes no further). */
export async function signIn(keyId, secret, region) {
  const body = "{}";
  const headers = await sign({
    method: "POST",
    path: "/console/session",
    host: location.host,
    body,
    region,
    service: "lambda",
    keyId,
    secret,
  });
  const resp = await call("POST", "/console/session", {
    body,
    headers: { ...headers, "Content-Type": "application/json" },
  });
  return resp.json();
}

export async function signOut() {
  await call("DELETE", "/console/session");
}
