#!/usr/bin/env python3
"""Contract test: the published PyPI client ``memtrace-sdk==0.2.0``, unchanged,
against a running memtrace worker.

Exercises all 19 methods of the synchronous ``Memtrace`` client and of the
asynchronous ``AsyncMemtrace`` client, asserting on what comes back (the
memory written is read back with the same content by recall, list, search,
agent and session reads; agents resolve by id and by name; a closed session
says so; the session context is the markdown the original renders) and on the
error mapping the SDK does (401 -> AuthenticationError, 404 -> NotFoundError,
409 -> ConflictError, 503 "arc instance" -> NoArcInstanceError).

Usage::

    MEMTRACE_API_KEY=mtk_... contract.py --base-url http://127.0.0.1:9100 \
        [--mode full|no-arc] [--client sync|async|both]

``--mode no-arc`` expects an org with no Arc binding on a worker without an
embedded store: every tenant call must raise NoArcInstanceError.

Prints one line per check. Exits 0 when every check passed, 1 on the first
failed check (with the request and the server's answer), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import pydantic

from memtrace import (
    AddMemoryRequest,
    AsyncMemtrace,
    AuthenticationError,
    ConflictError,
    ContextOptions,
    CreateSessionRequest,
    ListOptions,
    Memtrace,
    MemtraceError,
    NoArcInstanceError,
    NotFoundError,
    RegisterAgentRequest,
    SearchQuery,
    __version__ as SDK_VERSION,
)

EXPECTED_SDK_VERSION = "0.2.0"
# The SDK sends nothing that would need more; a hung server fails the check.
CLIENT_TIMEOUT_SECONDS = 15.0
# How far a server timestamp may be from this machine's clock.
CLOCK_SLACK = timedelta(minutes=10)
BODY_EXCERPT = 600


class CheckFailed(Exception):
    """A contract check did not hold; the message says which and why."""


class Wire:
    """Remembers the last HTTP exchange of one client, for failure reports.

    Installed as an httpx response hook on the SDK's own client: observing
    only, it changes nothing the SDK sends or parses.
    """

    def __init__(self) -> None:
        self.last: httpx.Response | None = None

    def attach(self, sdk_client: Any, is_async: bool) -> None:
        inner = getattr(sdk_client, "_client", None)
        if inner is None:
            return
        if is_async:

            async def hook(response: httpx.Response) -> None:
                self.last = response

        else:

            def hook(response: httpx.Response) -> None:
                self.last = response

        inner.event_hooks["response"].append(hook)

    def describe(self) -> str:
        r = self.last
        if r is None:
            return "no response received"
        try:
            body = r.text
        except httpx.ResponseNotRead:
            body = "<body not read>"
        if len(body) > BODY_EXCERPT:
            body = body[:BODY_EXCERPT] + "..."
        return f"last exchange: {r.request.method} {r.request.url} -> {r.status_code} {body!r}"


class Contract:
    """The checks, written once for both clients: every SDK call goes through
    :meth:`call`, which awaits the result when the client is asynchronous."""

    passed = 0  # over every client of this run

    def __init__(self, label: str, client: Any, bad_client: Any, wire: Wire) -> None:
        self.label = label
        self.client = client
        self.bad = bad_client
        self.wire = wire

    # --- plumbing ---

    def ok(self, name: str) -> None:
        Contract.passed += 1
        print(f"ok    {self.label:<5} {name}", flush=True)

    def fail(self, name: str, why: str) -> CheckFailed:
        return CheckFailed(f"{self.label} {name}: {why}\n  {self.wire.describe()}")

    def expect(self, name: str, condition: bool, detail: Any = "") -> None:
        if not condition:
            raise self.fail(name, f"expectation failed: {detail}")
        self.ok(name)

    async def call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs one SDK call that must succeed."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result
        except MemtraceError as e:
            raise self.fail(
                name, f"{type(e).__name__} (HTTP {e.status_code}): {e.message!r}"
            ) from None
        except pydantic.ValidationError as e:
            raise self.fail(name, f"the response does not parse as the SDK's model: {e}") from None
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as e:
            raise self.fail(name, f"{type(e).__name__}: {e}") from None

    async def call_fails(
        self, name: str, error: type[MemtraceError], status: int, fn: Callable[..., Any], *args: Any
    ) -> MemtraceError:
        """Runs one SDK call that must raise ``error`` with ``status``."""
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
        except MemtraceError as e:
            if type(e) is not error or e.status_code != status:
                raise self.fail(
                    name,
                    f"expected {error.__name__} ({status}), got {type(e).__name__} "
                    f"(HTTP {e.status_code}): {e.message!r}",
                ) from None
            self.ok(f"{name} -> {error.__name__} ({status})")
            return e
        except pydantic.ValidationError as e:
            raise self.fail(name, f"expected {error.__name__}, got a success that does not parse: {e}") from None
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as e:
            raise self.fail(name, f"expected {error.__name__}, got {type(e).__name__}: {e}") from None
        raise self.fail(name, f"expected {error.__name__} ({status}), the call succeeded: {result!r}")

    def recent(self, name: str, when: datetime | None) -> None:
        if when is None:
            raise self.fail(name, "timestamp missing")
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        now = datetime.now(timezone.utc)
        self.expect(name, abs(now - when) < CLOCK_SLACK, f"{when.isoformat()} is not near {now.isoformat()}")

    # --- mode: full ---

    async def full(self) -> None:
        c = self.client
        run = uuid.uuid4().hex[:10]
        name = f"sdk-{self.label}-{run}"
        token = f"t{run}{self.label}"  # unique in every content written below

        # authentication
        await self.call_fails("bad api key: list_agents", AuthenticationError, 401, self.bad.list_agents)
        await self.call_fails("bad api key: remember", AuthenticationError, 401, self.bad.remember, "agent_x", "x")

        # agents
        agent = await self.call(
            "register_agent",
            c.register_agent,
            RegisterAgentRequest(name=name, description="sdk contract", config={"model": "m1", "n": 2}),
        )
        self.expect("register_agent echoes name", agent.name == name, agent)
        self.expect("register_agent assigns id and org", bool(agent.id) and bool(agent.org_id), agent)
        self.expect("register_agent echoes description", agent.description == "sdk contract", agent)
        self.expect("register_agent echoes config", agent.config == {"model": "m1", "n": 2}, agent)
        self.recent("register_agent created_at is now", agent.created_at)
        org = agent.org_id
        await self.call_fails(
            "register_agent same name", ConflictError, 409, c.register_agent, RegisterAgentRequest(name=name)
        )
        by_id = await self.call("get_agent by id", c.get_agent, agent.id)
        self.expect("get_agent by id", (by_id.id, by_id.name, by_id.org_id) == (agent.id, name, org), by_id)
        by_name = await self.call("get_agent by name", c.get_agent, name)
        self.expect("get_agent by name", by_name.id == agent.id, by_name)
        listed = await self.call("list_agents", c.list_agents)
        self.expect("list_agents contains the agent", agent.id in [a.id for a in listed.agents], listed)
        self.expect("list_agents count", listed.count == len(listed.agents), listed.count)
        self.expect("list_agents all of the caller's org", all(a.org_id == org for a in listed.agents), listed)
        await self.call_fails("get_agent unknown", NotFoundError, 404, c.get_agent, f"agent_missing{run}")

        # sessions
        session = await self.call(
            "create_session", c.create_session, CreateSessionRequest(agent_id=agent.id, metadata={"run": run})
        )
        self.expect(
            "create_session is active for the agent",
            (session.status, session.agent_id, session.org_id) == ("active", agent.id, org) and bool(session.id),
            session,
        )
        self.expect("create_session echoes metadata", session.metadata == {"run": run}, session)
        self.expect("create_session not closed", session.closed_at is None, session)
        self.recent("create_session created_at is now", session.created_at)
        got = await self.call("get_session", c.get_session, session.id)
        self.expect("get_session", (got.id, got.status, got.agent_id) == (session.id, "active", agent.id), got)
        mine = await self.call("list_sessions by agent", c.list_sessions, agent.id)
        self.expect("list_sessions by agent contains it", [s.id for s in mine.sessions] == [session.id], mine)
        self.expect("list_sessions count", mine.count == len(mine.sessions), mine.count)
        everyone = await self.call("list_sessions", c.list_sessions)
        self.expect("list_sessions contains it", session.id in [s.id for s in everyone.sessions], everyone)
        await self.call_fails("get_session unknown", NotFoundError, 404, c.get_session, f"sess_missing{run}")

        # writes
        remembered_text = f"{token} user prefers dark mode"
        remembered = await self.call("remember", c.remember, agent.id, remembered_text)
        self.expect(
            "remember stores an episodic memory",
            (remembered.content, remembered.memory_type, remembered.event_type, remembered.agent_id, remembered.org_id)
            == (remembered_text, "episodic", "general", agent.id, org),
            remembered,
        )
        self.recent("remember time is now", remembered.time)
        decision_text = f"{token} use the blue deploy"
        decision = await self.call("decide", c.decide, agent.id, decision_text, "it is already staged")
        self.expect(
            "decide stores a decision with its reasoning",
            (decision.content, decision.memory_type, decision.event_type, decision.metadata)
            == (decision_text, "decision", "decision", {"reasoning": "it is already staged"}),
            decision,
        )
        dedup = f"dedup-{run}-{self.label}"
        turn_text = f"{token} hello from the session"
        turn = await self.call(
            "add_memory",
            c.add_memory,
            AddMemoryRequest(
                agent_id=agent.id,
                session_id=session.id,
                memory_type="session",
                event_type="user_message",
                content=turn_text,
                metadata={"turn": 1},
                tags=["sdk", "contract"],
                dedup_key=dedup,
                importance=0.75,
            ),
        )
        self.expect(
            "add_memory echoes every field",
            (turn.content, turn.session_id, turn.memory_type, turn.event_type, turn.metadata, turn.tags, turn.dedup_key)
            == (turn_text, session.id, "session", "user_message", {"turn": 1}, ["sdk", "contract"], dedup)
            and turn.importance is not None
            and abs(turn.importance - 0.75) < 1e-9,
            turn,
        )
        await self.call_fails(
            "add_memory same dedup_key",
            ConflictError,
            409,
            c.add_memory,
            AddMemoryRequest(
                agent_id=agent.id,
                memory_type="episodic",
                event_type="general",
                content=f"{token} retried write",
                dedup_key=dedup,
            ),
        )
        batch_texts = [f"{token} batch tool call", f"{token} batch fact"]
        batch = await self.call(
            "add_memories",
            c.add_memories,
            [
                AddMemoryRequest(
                    agent_id=agent.id,
                    session_id=session.id,
                    memory_type="episodic",
                    event_type="tool_call",
                    content=batch_texts[0],
                ),
                AddMemoryRequest(
                    agent_id=agent.id,
                    session_id=session.id,
                    memory_type="entity",
                    event_type="fact",
                    content=batch_texts[1],
                    tags=["sdk"],
                ),
            ],
        )
        self.expect("add_memories returns both, in order", [m.content for m in batch] == batch_texts, batch)
        self.expect("add_memories keeps the session", all(m.session_id == session.id for m in batch), batch)

        written = {remembered_text, decision_text, turn_text, *batch_texts}
        in_session = {turn_text, *batch_texts}

        # reads
        recalled = await self.call("recall", c.recall, agent.id)
        contents = [m.content for m in recalled.memories]
        self.expect("recall returns everything written", written <= set(contents), contents)
        self.expect("recall count", recalled.count == len(recalled.memories), recalled.count)
        self.expect("recall only the agent's", all(m.agent_id == agent.id for m in recalled.memories), contents)
        times = [m.time for m in recalled.memories]
        self.expect("recall newest first", times == sorted(times, reverse=True), times)

        asc = await self.call(
            "list_memories by session",
            c.list_memories,
            ListOptions(agent_id=agent.id, session_id=session.id, order="asc", limit=50),
        )
        self.expect("list_memories by session", {m.content for m in asc.memories} == in_session, asc)
        asc_times = [m.time for m in asc.memories]
        self.expect("list_memories oldest first", asc_times == sorted(asc_times), asc_times)
        self.expect("list_memories has_more false", asc.has_more is False, asc.has_more)
        tagged = await self.call(
            "list_memories by tags", c.list_memories, ListOptions(agent_id=agent.id, tags="sdk,contract")
        )
        self.expect("list_memories tags are AND", [m.content for m in tagged.memories] == [turn_text], tagged)
        typed = await self.call(
            "list_memories by type", c.list_memories, ListOptions(agent_id=agent.id, memory_type="decision")
        )
        self.expect("list_memories by type", [m.content for m in typed.memories] == [decision_text], typed)
        everything = await self.call(
            "list_memories all asc", c.list_memories, ListOptions(agent_id=agent.id, order="asc", limit=100)
        )
        ordered = [m.content for m in everything.memories]
        self.expect("list_memories all asc is exactly what was written", sorted(ordered) == sorted(written), ordered)
        page = await self.call(
            "list_memories page",
            c.list_memories,
            ListOptions(agent_id=agent.id, order="asc", limit=2, offset=1, since="1h"),
        )
        # remember, decide and add_memory were separate requests: distinct times
        self.expect("list_memories limit/offset", [m.content for m in page.memories] == ordered[1:3], page)
        self.expect("list_memories has_more when limited", page.has_more is True, page.has_more)

        found = await self.call(
            "search_memories", c.search_memories, SearchQuery(agent_id=agent.id, content_contains=token)
        )
        self.expect("search_memories finds everything", {m.content for m in found.results} == written, found)
        self.expect("search_memories count", found.count == len(found.results), found.count)
        self.expect("search_memories query_time_ms", found.query_time_ms >= 0, found.query_time_ms)
        decisions = await self.call(
            "search_memories by type",
            c.search_memories,
            SearchQuery(agent_id=agent.id, memory_types=["decision"], since="1h", order="asc", limit=10),
        )
        self.expect("search_memories by type", [m.content for m in decisions.results] == [decision_text], decisions)
        important = await self.call(
            "search_memories tags and importance",
            c.search_memories,
            SearchQuery(agent_id=agent.id, tags=["contract"], min_importance=0.5, event_types=["user_message"]),
        )
        self.expect("search_memories tags and importance", [m.content for m in important.results] == [turn_text], important)
        nothing = await self.call(
            "search_memories no match", c.search_memories, SearchQuery(agent_id=agent.id, content_contains=f"absent{run}")
        )
        self.expect("search_memories no match", (nothing.count, nothing.results) == (0, []), nothing)

        of_agent = await self.call("get_agent_memories", c.get_agent_memories, agent.id)
        self.expect("get_agent_memories", written <= {m.content for m in of_agent.memories}, of_agent)
        entities = await self.call(
            "get_agent_memories by type", c.get_agent_memories, agent.id, ListOptions(memory_type="entity", limit=10)
        )
        self.expect("get_agent_memories by type", [m.content for m in entities.memories] == [batch_texts[1]], entities)
        of_session = await self.call("get_session_memories", c.get_session_memories, session.id)
        self.expect("get_session_memories", {m.content for m in of_session.memories} == in_session, of_session)
        self.expect(
            "get_session_memories all in the session",
            all(m.session_id == session.id for m in of_session.memories),
            of_session,
        )

        stats = await self.call("get_agent_stats", c.get_agent_stats, agent.id)
        types = stats.memory_types
        self.expect(
            "get_agent_stats counts what was written",
            stats.agent_id == agent.id
            and stats.memory_count >= len(written)
            and stats.memories_24h >= len(written)
            and stats.session_count >= 1
            and stats.active_sessions >= 1
            and types.get("episodic", 0) >= 2
            and types.get("decision", 0) >= 1
            and types.get("session", 0) >= 1
            and types.get("entity", 0) >= 1,
            stats,
        )

        context = await self.call("get_session_context", c.get_session_context, session.id)
        self.expect("get_session_context names the session", context.session_id == session.id, context)
        self.expect("get_session_context header", "## Session Context" in context.context, context.context)
        self.expect(
            "get_session_context has the memories",
            all(t in context.context for t in in_session) and context.memory_count >= len(in_session),
            context,
        )
        only_entities = await self.call(
            "get_session_context with options",
            c.get_session_context,
            session.id,
            ContextOptions(include_types=["entity"], since="1h", max_tokens=2000),
        )
        self.expect(
            "get_session_context include_types",
            batch_texts[1] in only_entities.context and turn_text not in only_entities.context
            and only_entities.memory_count == 1,
            only_entities,
        )

        closed = await self.call("close_session", c.close_session, session.id)
        self.expect("close_session", (closed.id, closed.status) == (session.id, "closed"), closed)
        self.recent("close_session sets closed_at", closed.closed_at)
        again = await self.call("get_session after close", c.get_session, session.id)
        self.expect("get_session after close", again.status == "closed" and again.closed_at is not None, again)
        after = await self.call("get_agent_stats after close", c.get_agent_stats, agent.id)
        self.expect("get_agent_stats no active session", after.active_sessions == 0, after)
        await self.call_fails("close_session unknown", NotFoundError, 404, c.close_session, f"sess_missing{run}")

        # the SDK percent-encodes path ids: a name with a space and a slash
        spare_name = f"{name} spare/one"
        spare = await self.call("register_agent spare", c.register_agent, RegisterAgentRequest(name=spare_name))
        by_odd_name = await self.call("get_agent by a percent-encoded name", c.get_agent, spare_name)
        self.expect("get_agent by a percent-encoded name", by_odd_name.id == spare.id, by_odd_name)
        deleted = await self.call("delete_agent", c.delete_agent, spare.id)
        self.expect("delete_agent returns nothing", deleted is None, deleted)
        await self.call_fails("get_agent deleted", NotFoundError, 404, c.get_agent, spare.id)
        remaining = await self.call("list_agents after delete", c.list_agents)
        ids = [a.id for a in remaining.agents]
        self.expect("list_agents after delete", spare.id not in ids and agent.id in ids, ids)
        await self.call_fails("delete_agent unknown", NotFoundError, 404, c.delete_agent, spare.id)

    # --- mode: no-arc ---

    async def no_arc(self) -> None:
        c = self.client
        await self.call_fails("bad api key: remember", AuthenticationError, 401, self.bad.remember, "agent_x", "x")
        memory = AddMemoryRequest(agent_id="agent_x", memory_type="episodic", event_type="general", content="x")
        calls: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
            ("remember", c.remember, ("agent_x", "nowhere to go")),
            ("add_memories", c.add_memories, ([memory],)),
            ("recall", c.recall, ("agent_x",)),
            ("list_memories", c.list_memories, (ListOptions(agent_id="agent_x"),)),
            ("search_memories", c.search_memories, (SearchQuery(content_contains="x"),)),
            ("register_agent", c.register_agent, (RegisterAgentRequest(name="nowhere"),)),
            ("list_agents", c.list_agents, ()),
            ("create_session", c.create_session, (CreateSessionRequest(agent_id="agent_x"),)),
            ("list_sessions", c.list_sessions, ()),
        ]
        for name, fn, args in calls:
            e = await self.call_fails(f"no arc: {name}", NoArcInstanceError, 503, fn, *args)
            self.expect(f"no arc: {name} says so", "arc instance" in e.message.lower(), e.message)


async def run_client(label: str, base_url: str, api_key: str, mode: str) -> None:
    bad_key = "mtk_" + "A" * 43 + "="
    wire = Wire()
    if label == "sync":
        client: Any = Memtrace(base_url, api_key, timeout=CLIENT_TIMEOUT_SECONDS)
        bad: Any = Memtrace(base_url, bad_key, timeout=CLIENT_TIMEOUT_SECONDS)
    else:
        client = AsyncMemtrace(base_url, api_key, timeout=CLIENT_TIMEOUT_SECONDS)
        bad = AsyncMemtrace(base_url, bad_key, timeout=CLIENT_TIMEOUT_SECONDS)
    wire.attach(client, label == "async")
    wire.attach(bad, label == "async")
    contract = Contract(label, client, bad, wire)
    try:
        await (contract.full() if mode == "full" else contract.no_arc())
    finally:
        for c in (client, bad):
            closing = c.close()
            if inspect.isawaitable(closing):
                await closing


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the worker's REST base URL")
    parser.add_argument("--mode", choices=["full", "no-arc"], default="full")
    parser.add_argument("--client", choices=["sync", "async", "both"], default="both")
    args = parser.parse_args()
    api_key = os.environ.get("MEMTRACE_API_KEY", "")
    if not api_key:
        print("contract: MEMTRACE_API_KEY is required (the API key to test with)", file=sys.stderr)
        return 2
    if SDK_VERSION != EXPECTED_SDK_VERSION:
        print(f"contract: memtrace-sdk {SDK_VERSION} installed, {EXPECTED_SDK_VERSION} required", file=sys.stderr)
        return 2
    print(f"contract: memtrace-sdk {SDK_VERSION}, mode {args.mode}, against {args.base_url}", flush=True)
    labels = ["sync", "async"] if args.client == "both" else [args.client]
    for label in labels:
        try:
            await run_client(label, args.base_url, api_key, args.mode)
        except CheckFailed as e:
            print(f"FAIL  {e}", flush=True)
            print(f"contract: FAILED after {Contract.passed} passing checks", flush=True)
            return 1
    print(f"contract: PASSED ({Contract.passed} checks, mode {args.mode})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
