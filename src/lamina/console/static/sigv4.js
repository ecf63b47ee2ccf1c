// SigV4 for the one request the console signs itself: POST /console/session (sign-in).
// Every later call rides on the session cookie, so the secret is needed only here, for the
// length of one call, and is never stored. Uses WebCrypto, which browsers offer only in a
// secure context (https, or http on localhost/127.0.0.1).

const enc = new TextEncoder();

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(text) {
  return hex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
}

async function hmac(key, text) {
  const raw = typeof key === "string" ? enc.encode(key) : key;
  const k = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return crypto.subtle.sign("HMAC", k, enc.encode(text));
}

/** "20261206T093000Z" and "20261206" of a Date. */
function amzDate(now) {
  const stamp = now.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  return [stamp, stamp.slice(0, 8)];
}

/**
 * The headers that sign one request (SigV4: host, x-amz-date and x-amz-content-sha256
 * signed). `path` must already be canonical (no query, no characters to encode).
 */
export async function sign({ method, path, host, body, region, service, keyId, secret }) {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new Error(
      "Signing in needs the browser's WebCrypto, offered only over https or on localhost.",
    );
  }
  const [stamp, day] = amzDate(new Date());
  const payloadHash = await sha256(body);
  const signed = "host;x-amz-content-sha256;x-amz-date";
  const canonical = [
    method,
    path,
    "",
    `host:${host}`,
    `x-amz-content-sha256:${payloadHash}`,
    `x-amz-date:${stamp}`,
    "",
    signed,
    payloadHash,
  ].join("\n");
  const scope = `${day}/${region}/${service}/aws4_request`;
  const toSign = ["AWS4-HMAC-SHA256", stamp, scope, await sha256(canonical)].join("\n");
  let key = await hmac(`AWS4${secret}`, day);
  for (const part of [region, service, "aws4_request"]) key = await hmac(key, part);
  const signature = hex(await hmac(key, toSign));
  return {
    "x-amz-date": stamp,
    "x-amz-content-sha256": payloadHash,
    authorization:
      `AWS4-HMAC-SHA256 Credential=${keyId}/${scope}, ` +
      `SignedHeaders=${signed}, Signature=${signature}`,
  };
}
