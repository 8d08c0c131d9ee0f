"""Trigger rules over HTTP: a workflow with an unknown rule is a 422 naming the field and
the rules, and nothing is stored; a known rule is kept in the registered definition."""

from __future__ import annotations

from typing import Any

import aiohttp

from flowweaver.testing.runs import TRIGGER_RULES

from .conftest import LiveServer, run

PROBLEM = "application/problem+json"


def _workflow(rule: str) -> dict[str, Any]:
    return {
        "id": "with-cleanup",
        "tasks": [
            {"id": "work", "handler": "noop"},
            {"id": "cleanup", "handler": "noop", "dependencies": ["work"], "trigger": rule},
        ],
    }


def test_an_unknown_trigger_rule_is_a_422_and_stores_nothing(server: LiveServer) -> None:
    async def main() -> None:
        url = f"{server.url}/workflows"
        async with aiohttp.ClientSession() as s:
            top = server.store.max_position()
            async with s.post(url, json=_workflow("when_it_rains")) as r:
                body = await r.json(content_type=None)
                assert r.status == 422, body
                assert r.headers["Content-Type"].startswith(PROBLEM)
            [error] = body["errors"]
            assert error["path"] == "$.tasks[1].trigger"
            assert error["message"].startswith("Invalid enum value 'when_it_rains'")
            assert (
                "all_done" in error["message"]
                and "none_failed_min_one_success" in (error["message"])
            )
            assert server.store.max_position() == top
            async with s.post(url, json=_workflow("all_done")) as r:
                assert r.status == 201, await r.text()
            async with s.get(f"{url}/with-cleanup") as r:
                definition = (await r.json())["definition"]
            assert definition["tasks"][1]["trigger"] == "all_done"
            assert "trigger" not in definition["tasks"][0]

    run(main())


def test_the_openapi_document_lists_the_trigger_rules(server: LiveServer) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.get(f"{server.url}/openapi.json") as r:
            document = await r.json()
        trigger = document["components"]["schemas"]["TaskSpec"]["properties"]["trigger"]
        [rules] = [branch["enum"] for branch in trigger["anyOf"] if "enum" in branch]
        assert sorted(rules) == sorted(TRIGGER_RULES)

    run(main())
