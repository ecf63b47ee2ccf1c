"""`cluster.nats.while_leaderless`: a write NATS refuses while a stream elects its leader is
tried again, for a while, and only that refusal is."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import nats.js.errors
import pytest

from lamina.cluster.nats import while_leaderless


def test_a_write_refused_during_an_election_is_tried_again_until_it_succeeds() -> None:
    answers: list[BaseException | str] = [
        nats.errors.NoRespondersError(),
        nats.js.errors.NoStreamResponseError(),
        "stored",
    ]
    tries = []

    async def write() -> str:
        tries.append(time.monotonic())
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert asyncio.run(while_leaderless(write, 5.0, 0.01)) == "stored"
    assert len(tries) == 3


def test_the_refusal_is_raised_once_the_wait_is_over() -> None:
    tries = 0

    async def write() -> None:
        nonlocal tries
        tries += 1
        raise nats.errors.NoRespondersError()

    started = time.monotonic()
    with pytest.raises(nats.errors.NoRespondersError):
        asyncio.run(while_leaderless(write, 0.2, 0.05))
    assert 0.2 <= time.monotonic() - started < 2
    assert tries >= 3


def test_any_other_error_is_raised_at_once() -> None:
    tries = 0

    async def write() -> None:
        nonlocal tries
        tries += 1
        raise nats.js.errors.KeyWrongLastSequenceError()

    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        asyncio.run(while_leaderless(write, 5.0, 0.01))
    assert tries == 1
