"""The sub-query cache on its own: keys, shared flights, a cancelled leader."""

from __future__ import annotations

import anyio

from rlm_mcp.subcache import SubQueryCache


def test_every_part_of_the_key_matters_and_splits_do_not_collide():
    key = SubQueryCache.key
    base = key("command", "m", "sys", "prompt", 64)
    assert base == key("command", "m", "sys", "prompt", 64)
    others = [key("provider", "m", "sys", "prompt", 64), key("command", "n", "sys", "prompt", 64),
              key("command", "m", "sys2", "prompt", 64), key("command", "m", "sys", "prompt2", 64),
              key("command", "m", "sys", "prompt", 65), key("command", "m", "sysp", "rompt", 64)]
    assert len({base, *others}) == 7


async def test_when_the_asking_call_is_cancelled_a_waiting_copy_asks_in_its_place():
    cache = SubQueryCache()
    calls: list[str] = []
    got: dict[str, tuple[str, bool]] = {}
    scopes: list[anyio.CancelScope] = []

    async def slow(name: str) -> str:
        calls.append(name)
        await anyio.sleep(0.3)
        return name

    async def leader() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await cache.run("k", lambda: slow("leader"))

    async def waiter() -> None:
        got["waiter"] = await cache.run("k", lambda: slow("waiter"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.sleep(0.05)  # the leader is in its call
        tg.start_soon(waiter)
        await anyio.sleep(0.05)  # the waiter waits on the leader's flight
        assert calls == ["leader"]
        scopes[0].cancel()
    assert calls == ["leader", "waiter"]
    assert got["waiter"] == ("waiter", False)
    assert cache.status() == {"enabled": True, "hits": 0, "misses": 2, "answers_kept": 1, "in_flight": 0}


def test_kept_answers_are_bounded_and_the_oldest_go_first():
    cache = SubQueryCache(max_chars=10)

    async def main() -> None:
        for i in range(5):
            await cache.run(str(i), lambda i=i: _const(f"{i}abcd"))

    anyio.run(main)
    assert cache.status()["answers_kept"] == 2


async def _const(text: str) -> str:
    return text
