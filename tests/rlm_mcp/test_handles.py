"""Session handles: unguessable, shown only as a short hash, bound to the credentials they were minted under."""

from __future__ import annotations

import re

from rlm_mcp import handles


def test_a_handle_is_256_random_bits_of_url_safe_text():
    minted = {handles.mint() for _ in range(1000)}
    assert len(minted) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", h) for h in minted)


def test_logs_show_eight_hex_digits_that_give_nothing_of_the_handle_back():
    handle = handles.mint()
    shown = handles.short(handle)
    assert re.fullmatch(r"[0-9a-f]{8}", shown) and shown not in handle and shown == handles.short(handle)


def test_a_session_bound_to_a_token_is_refused_under_another_and_without_one():
    bound = handles.credential_digest("Bearer one")
    assert handles.same_credential(bound, "Bearer one")
    assert not handles.same_credential(bound, "Bearer two")
    assert not handles.same_credential(bound, None)
    assert handles.same_credential(handles.credential_digest(None), "Bearer anything")  # no --auth-token


STATEFUL = {"load_context", "list_contexts", "peek", "search", "exec_python", "answer_sub_queries", "sub_query",
            "rlm_solve", "get_variable", "rlm_status", "reset_session", "show_trace"}


async def test_every_stateful_tool_takes_session_and_says_where_it_comes_from(make_client):
    async with make_client() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        prompt = (await client.get_prompt("rlm")).messages[0].content.text
    assert STATEFUL <= set(tools)
    for name in STATEFUL:
        schema = tools[name].input_schema
        assert "session" in schema["properties"] and "session" not in schema.get("required", []), name
        assert "first call" in schema["properties"]["session"]["description"], name
    assert "`session`" in prompt and "every later call" in prompt
