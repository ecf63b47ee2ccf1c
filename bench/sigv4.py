"""Benchmark SigV4 verification alone: Lamina's `Verifier.verify` on the same signed request, N
times, in this process (no server, no HTTP).

Run: ``.venv/bin/python bench/sigv4.py [--iterations 20000] [--rounds 5]`` (or
``make bench-sigv4``).

Two requests, each verified `--iterations` times per round, for `--rounds` rounds:

* boto3 Invoke: the request boto3 itself sends for ``invoke(FunctionName="bench-noop",
  Payload=b"{}")``, captured just before it would go on the wire (boto3 signs its
  ``amz-sdk-*`` headers, Content-Length and Host too: this is what users' clients send), with
  the headers as the server sees them (names lower-case).
* wrk replay: the request bench/invoke.py replays with wrk (Content-Type, Host, X-Amz-Date
  signed).

The verifier is built as the server builds it: `Verifier(KeyStore, region)`, the key store a
real one (sealed secrets in a temporary data dir) holding the admin key. Before timing, each
request must verify to the admin principal and the same request with its signature's last
digit changed must be refused with InvalidSignature, so a verifier that accepts anything
cannot pass. The floor beside it: the cryptography a verification cannot avoid, SHA-256 of
the body, SHA-256 of a canonical request of the same size, one HMAC-SHA256 (the signing key
cached, as the verifier caches it), timed the same way.

Printed: µs per verification, the median round and the best, and the ratio to the floor.
Target (issue 19): <= 15 µs per verification of boto3's Invoke (median round), reported as
met/missed; the exit status is 0 unless a check failed (1).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSPreparedRequest
from botocore.config import Config

from lamina.auth.keys import KeyStore
from lamina.auth.sigv4 import InvalidSignature, SignedRequest, Verifier

# bench/ is on sys.path: this file is run as a script from it.
from signing import ADMIN_KEY, REGION, signed_headers

TARGET_US = 15.0
HOST = "127.0.0.1:8484"
PATH = "/2015-03-31/functions/bench-noop/invocations"
BODY = b"{}"


class _Captured(Exception):
    """Raised from boto3's before-send hook: the request is captured, not sent."""


def boto3_invoke() -> SignedRequest:
    """The request boto3 sends for one Invoke, as the server would see it."""
    client = boto3.client(
        "lambda",
        endpoint_url=f"http://{HOST}",
        region_name=REGION,
        aws_access_key_id=ADMIN_KEY[0],
        aws_secret_access_key=ADMIN_KEY[1],
        config=Config(retries={"total_max_attempts": 1}),
    )
    captured: list[AWSPreparedRequest] = []

    def capture(request: AWSPreparedRequest, **_: Any) -> None:
        captured.append(request)
        raise _Captured

    client.meta.events.register("before-send.lambda.Invoke", capture)
    try:
        client.invoke(FunctionName="bench-noop", Payload=BODY)
    except _Captured:
        pass
    finally:
        client.close()
    if not captured:
        raise SystemExit("boto3 sent no request")
    prepared = captured[0]
    # botocore's header values are str, or bytes for some it sets itself
    items: list[tuple[str, str | bytes]] = list(prepared.headers.items())
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in items}
    headers["host"] = HOST  # added by the HTTP layer below botocore, signed as this
    body = prepared.body if isinstance(prepared.body, bytes) else BODY
    return SignedRequest("POST", PATH, "", headers, body)


def wrk_replay() -> SignedRequest:
    """The request bench/invoke.py has wrk replay."""
    url = f"http://{HOST}{PATH}"
    sent = signed_headers("POST", url, BODY, {"Content-Type": "application/json"})
    headers = {k.lower(): v for k, v in sent.items()}
    headers.update({"host": HOST, "content-length": str(len(BODY))})
    return SignedRequest("POST", PATH, "", headers, BODY)


def tampered(request: SignedRequest) -> SignedRequest:
    auth = request.headers["authorization"]
    last = "0" if auth[-1] != "0" else "1"
    return replace(request, headers={**request.headers, "authorization": auth[:-1] + last})


def check(verifier: Verifier, name: str, request: SignedRequest) -> None:
    principal = verifier.verify(request, "lambda")
    if principal.access_key_id != ADMIN_KEY[0]:
        raise SystemExit(f"{name}: verified as {principal.access_key_id}, not the admin key")
    try:
        verifier.verify(tampered(request), "lambda")
    except InvalidSignature:
        return
    raise SystemExit(f"{name}: a tampered signature was accepted")


def per_call_us(work: Callable[[], object], iterations: int) -> float:
    started = time.perf_counter()
    for _ in range(iterations):
        work()
    return (time.perf_counter() - started) * 1e6 / iterations


def crypto_floor(request: SignedRequest) -> Callable[[], object]:
    """The hashing one verification of `request` cannot avoid."""
    key = hashlib.sha256(b"signing key").digest()
    canonical = "\n".join(f"{k}:{v}" for k, v in sorted(request.headers.items())).encode()

    def work() -> object:
        hashlib.sha256(request.body).hexdigest()
        digest = hashlib.sha256(canonical).hexdigest()
        return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()

    return work


@dataclass
class Result:
    name: str
    rounds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    @property
    def best(self) -> float:
        return min(self.rounds)


def measure(name: str, work: Callable[[], object], iterations: int, rounds: int) -> Result:
    per_call_us(work, max(iterations // 10, 1))  # warm caches (the signing key among them)
    return Result(name, [per_call_us(work, iterations) for _ in range(rounds)])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=20000, help="verifications per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.rounds < 1:
        parser.error("--iterations and --rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lamina-sigv4-") as tmp:
        keys = KeyStore(Path(tmp), "000000000000")
        try:
            keys.set_admin(*ADMIN_KEY)
            verifier = Verifier(keys, REGION)
            requests = {"boto3 Invoke": boto3_invoke(), "wrk replay": wrk_replay()}
            for name, request in requests.items():
                check(verifier, name, request)
            results = []
            for name, request in requests.items():

                def verify(request: SignedRequest = request) -> object:
                    return verifier.verify(request, "lambda")

                results.append(measure(name, verify, args.iterations, args.rounds))
            floor = measure(
                "floor (2 SHA-256 + HMAC)",
                crypto_floor(requests["boto3 Invoke"]),
                args.iterations,
                args.rounds,
            )
        finally:
            keys.close()
    signed = {
        name: r.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
        for name, r in requests.items()
    }
    print(
        f"Verifier.verify, {args.iterations:,} verifications per round, {args.rounds} rounds, "
        "one thread"
    )
    print(f"{'request':<26}{'median µs':>10}{'best µs':>10}{'/ floor':>9}  signed headers")
    for r in [*results, floor]:
        ratio = f"{r.median / floor.median:.1f}x"
        print(f"{r.name:<26}{r.median:>10.2f}{r.best:>10.2f}{ratio:>9}  {signed.get(r.name, '')}")
    boto = results[0]
    verdict = "met" if boto.median <= TARGET_US else "missed"
    print(
        f"\ntarget (issue 19): SigV4 verification <= {TARGET_US:g} µs: {verdict} "
        f"({boto.median:.2f} µs per verification of boto3's Invoke, median round)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
