"""orchestrion next to LangGraph and DBOS: the same turn, the same store, one process.

Needs the `bench` extra (`pip install -e '.[bench]'`): LangGraph with its SQLite and
PostgreSQL checkpointers, and DBOS.

The turn (issue 12's workload), written the way each system's users write it:
- orchestrion: an `Agent` whose `ScriptedModel` calls an async no-op `@tool` 10 times in
  sequence, then answers; `Orchestrion.send`, defaults, a new conversation per turn.
- LangGraph: the agent loop (a model node, `tools_condition`, the prebuilt `ToolNode`
  running a no-op `@tool`) whose model node answers from the messages the same way (a tool
  call per reply, 10 times, then the answer); `graph.invoke` with a new `thread_id` per
  turn; the sync `SqliteSaver` / `PostgresSaver` (the sync API is LangGraph's fastest path
  with these savers). Its durability modes both appear: "async" (its default: a step's
  checkpoint is written while the next step runs) and "sync" (before the next step).
- DBOS: a `@DBOS.workflow` calling a `@DBOS.step` "model" and a `@DBOS.step` no-op tool
  the same way (sync functions, DBOS's fastest path), one workflow per turn.
Each turn is 11 model steps and 10 tool steps; µs per tool call = turn time / 10.

On SQLite (default; beside the given file with `--store sqlite:///...`): each system in
its own temporary file. With `--store postgresql://...`: each in a throwaway schema of
that database (DBOS's system schema, LangGraph's search_path), dropped at the end.

Repetitions are interleaved across systems (the order rotates), medians are reported, and
ratios are medians of the per-repetition ratios. Then, from a few more turns with counters
installed (not timed), what each system wrote per turn: write commits (SQLite: COMMITs of
transactions that wrote, seen by a trace callback; orchestrion on PostgreSQL: store write
calls; LangGraph on PostgreSQL: calls of the saver's put and put_writes, each one
transaction; DBOS: SQLAlchemy commits of transactions that executed a write) and, on
SQLite, rows changed. Who fsyncs is read from each connection (journal_mode, synchronous)
and printed with the table.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from orchestrion import Orchestrion

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the CLI loads benchmarks by path: let them find _workload
    sys.path.insert(0, _HERE)
import _workload as w  # noqa: E402

EXTRA = ("langgraph", "langgraph.checkpoint.sqlite", "langgraph.checkpoint.postgres", "dbos")
INSTALL = (
    "bench peers needs the bench extra (LangGraph, its SQLite and PostgreSQL checkpointers, "
    "DBOS): pip install -e '.[bench]'  (or pip install 'orchestrion[bench]')"
)
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "WITH")


def missing_extra() -> list[str]:
    """The modules of the bench extra that cannot be imported here."""
    missing = []
    for name in EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _is_write(statement: str) -> bool:
    return statement.lstrip()[:7].upper().startswith(WRITES)


class System:
    """One column: a system with its store, timed turns and counted turns."""

    name = ""
    fsync = ""  # who fsyncs and how, read from its connection where possible
    per_step = ""  # what it writes per step

    async def time_turns(self, turns: int) -> float:
        """µs per tool call over `turns` turns."""
        start = time.perf_counter()
        for _ in range(turns):
            await self.turn()
        return (time.perf_counter() - start) / turns / w.TOOL_CALLS * 1e6

    async def turn(self) -> None:
        raise NotImplementedError

    async def count(self, turns: int) -> dict[str, float]:
        """Medians per turn: "commits" (write commits) and, where known, "rows"."""
        per_turn: dict[str, list[float]] = {}
        self.counting(True)  # not while timed: a counter costs a little per statement
        try:
            for _ in range(turns):
                before = self.counters()
                await self.turn()
                for key, value in self.counters().items():
                    per_turn.setdefault(key, []).append(value - before[key])
        finally:
            self.counting(False)
        return {key: w.median(values) for key, values in per_turn.items()}

    def counting(self, on: bool) -> None:
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


# ---- orchestrion ---------------------------------------------------------------------------


class OrchestrionSystem(System):
    def __init__(self, url: str, durability: str | None) -> None:
        self.durability = durability
        self.postgres = w.is_postgres(url)
        kwargs: dict[str, Any] = {"durability": durability} if durability else {}
        self.orx = Orchestrion(url, agents=[w.sequential_agent()], **kwargs)
        self.name = "orchestrion" + (f", durability {durability}" if durability else "")
        self.counter: w.StoreCounter | None = None

    async def open(self) -> OrchestrionSystem:
        await self.orx.open()
        if self.postgres:
            self.fsync = "PostgreSQL: every commit flushes the WAL (synchronous_commit)"
        else:
            sync = "NORMAL" if self.durability == "normal" else "FULL"
            self.fsync = f"WAL, synchronous={sync}: " + (
                "no fsync per commit (survives a process crash, not a power loss)"
                if sync == "NORMAL"
                else "the WAL is fsynced at every commit"
            )
        self.per_step = (
            "a read-only step rides with the run's next commit (submit, claim, completion; "
            "a flush of what waited > 20 ms); a write step commits its own record"
        )
        return self

    async def turn(self) -> None:
        result = await self.orx.send(w.AGENT, "go")
        if result.status != "succeeded" or result.answer != w.ANSWER:
            raise RuntimeError(f"an orchestrion turn ended {result.status}: {result.error}")

    def counting(self, on: bool) -> None:
        if on:
            self.counter = w.StoreCounter(self.orx.store).install()
        elif self.counter is not None:
            self.counter.remove()

    def counters(self) -> dict[str, int]:
        assert self.counter is not None
        if self.counter.sqlite:
            return {"commits": self.counter.commits, "rows": self.counter.rows}
        return {"commits": self.counter.writes}

    async def close(self) -> None:
        await self.orx.close()


# ---- LangGraph -----------------------------------------------------------------------------


def _langgraph_builder() -> Any:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import tool as lc_tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @lc_tool
    def noop(i: int) -> None:
        """Do nothing with i."""
        return None

    def model(state: MessagesState) -> dict[str, Any]:
        position = 0  # like ScriptedModel: replies since the user's message
        for message in reversed(state["messages"]):
            if isinstance(message, HumanMessage):
                break
            if isinstance(message, AIMessage):
                position += 1
        if position < w.TOOL_CALLS:
            calls = [{"name": "noop", "args": {"i": position}, "id": f"call_{position}"}]
            return {"messages": [AIMessage(content="", tool_calls=calls)]}
        return {"messages": [AIMessage(content=w.ANSWER)]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_node("tools", ToolNode([noop]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder


class LangGraphSystem(System):
    per_step = (
        "per super-step (the input, each model or tool node) a checkpoint (put) and the "
        "node's pending writes (put_writes), each its own transaction"
    )

    def __init__(self, saver: Any, durability: str, saver_name: str, fsync: str) -> None:
        from langchain_core.messages import HumanMessage

        self.graph = _langgraph_builder().compile(checkpointer=saver)
        self.durability = durability
        self.name = f"LangGraph {saver_name}, durability {durability!r}"
        self.fsync = fsync
        self._message = HumanMessage

    async def turn(self) -> None:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        out = self.graph.invoke(
            {"messages": [self._message("go")]}, config, durability=self.durability
        )
        if out["messages"][-1].content != w.ANSWER:
            raise RuntimeError("a LangGraph turn did not end with the answer")

    async def close(self) -> None:
        pass  # the saver is shared by both durability modes: see LangGraphStore


class LangGraphSQLite:
    """One SqliteSaver on a WAL file (the saver sets WAL), shared by both modes."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.saver = SqliteSaver(self.conn)
        self.saver.setup()
        self.commits = 0
        mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = self.conn.execute("PRAGMA synchronous").fetchone()[0]
        level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, str(sync))
        self.fsync = f"journal_mode={mode}, synchronous={level} (SQLite's default)" + (
            ": the WAL is fsynced at every commit" if level in ("FULL", "EXTRA") else ""
        )

    def _trace(self, statement: str) -> None:
        if statement.lstrip()[:6].upper() == "COMMIT":
            self.commits += 1

    def systems(self) -> list[System]:
        return [_CountedLangGraph(self, mode) for mode in ("async", "sync")]

    def counting(self, on: bool) -> None:
        self.conn.set_trace_callback(self._trace if on else None)

    def counters(self) -> dict[str, int]:
        return {"commits": self.commits, "rows": self.conn.total_changes}

    def close(self) -> None:
        self.conn.close()


class LangGraphPostgres:
    """One PostgresSaver on a connection whose search_path is a throwaway schema. Its
    writes are counted as calls of `put` and `put_writes`: in autocommit mode each sends
    its statements in one pipeline, which PostgreSQL runs as one implicit transaction."""

    def __init__(self, conninfo: str, schema: str) -> None:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row

        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.commits = 0
        self.on = False
        self.conn = psycopg.connect(
            conninfo,
            autocommit=True,
            prepare_threshold=0,
            row_factory=dict_row,
            options=f"-c search_path={schema}",
        )
        self.saver = PostgresSaver(self.conn)  # type: ignore[arg-type]
        self.saver.setup()
        for name in ("put", "put_writes"):
            setattr(self.saver, name, self._counted(getattr(self.saver, name)))
        self.fsync = "PostgreSQL: every commit flushes the WAL (synchronous_commit)"

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.commits += self.on
            return method(*args, **kwargs)

        return counted

    def systems(self) -> list[System]:
        return [_CountedLangGraph(self, mode) for mode in ("async", "sync")]

    def counting(self, on: bool) -> None:
        self.on = on

    def counters(self) -> dict[str, int]:
        return {"commits": self.commits}

    def close(self) -> None:
        self.conn.close()


class _CountedLangGraph(LangGraphSystem):
    def __init__(self, store: LangGraphSQLite | LangGraphPostgres, durability: str) -> None:
        name = "SqliteSaver" if isinstance(store, LangGraphSQLite) else "PostgresSaver"
        super().__init__(store.saver, durability, name, store.fsync)
        self.store = store

    def counting(self, on: bool) -> None:
        self.store.counting(on)

    def counters(self) -> dict[str, int]:
        return self.store.counters()


# ---- DBOS ----------------------------------------------------------------------------------


class DBOSSystem(System):
    name = ""
    per_step = (
        "per step its output row (operation_outputs) in its own transaction; "
        "the workflow's status row at start and end"
    )

    def __init__(self, system_database_url: str, schema: str | None) -> None:
        import sqlalchemy as sa
        from dbos import DBOS

        self.DBOS = DBOS
        config: dict[str, Any] = {
            "name": "orchestrion-bench",
            "system_database_url": system_database_url,
            "log_level": "WARNING",
        }
        if schema is not None:
            config["dbos_system_schema"] = schema
        DBOS(config=config)  # type: ignore[arg-type]

        @DBOS.step()
        def model(position: int) -> dict[str, Any]:
            return {"i": position} if position < w.TOOL_CALLS else {"answer": w.ANSWER}

        @DBOS.step()
        def noop(i: int) -> None:
            return None

        @DBOS.workflow()
        def turn(message: str) -> str:
            position = 0
            while True:
                reply = model(position)
                if "answer" in reply:
                    return str(reply["answer"])
                noop(reply["i"])
                position += 1

        self._turn = turn
        DBOS.launch()
        from dbos import _dbos

        engine = _dbos._dbos_global_instance._sys_db.engine  # type: ignore[union-attr]
        self.sqlite = engine.dialect.name == "sqlite"
        self.name = "DBOS on " + ("SQLite" if self.sqlite else "PostgreSQL")
        self.commits = 0
        self.rows = 0
        self._wrote: set[int] = set()
        self._changes: dict[int, int] = {}
        self._engine = engine
        self._listeners: list[tuple[str, Callable[..., None]]] = [
            ("after_cursor_execute", self._after_execute),
            ("commit", self._commit),
            ("rollback", self._rollback),
        ]
        if self.sqlite:
            self._listeners += [("checkout", self._checkout), ("checkin", self._checkin)]
            with engine.connect() as conn:
                mode = conn.execute(sa.text("PRAGMA journal_mode")).scalar()
                sync = conn.execute(sa.text("PRAGMA synchronous")).scalar()
            level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync, str(sync))
            self.fsync = f"journal_mode={mode}, synchronous={level} (DBOS sets neither)" + (
                ": a rollback journal, several fsyncs per commit"
                if str(mode).lower() != "wal" and level in ("FULL", "EXTRA")
                else ""
            )
        else:
            self.fsync = "PostgreSQL: every commit flushes the WAL (synchronous_commit)"

    def _after_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if _is_write(statement):
            self._wrote.add(id(conn))

    def counting(self, on: bool) -> None:
        import sqlalchemy as sa

        for name, listener in self._listeners:
            (sa.event.listen if on else sa.event.remove)(self._engine, name, listener)

    def _rollback(self, conn: Any) -> None:
        self._wrote.discard(id(conn))

    def _commit(self, conn: Any) -> None:
        if id(conn) in self._wrote:
            self._wrote.discard(id(conn))
            self.commits += 1

    def _checkout(self, dbapi_conn: Any, record: Any, proxy: Any) -> None:
        self._changes[id(dbapi_conn)] = dbapi_conn.total_changes

    def _checkin(self, dbapi_conn: Any, record: Any) -> None:
        before = self._changes.pop(id(dbapi_conn), None)
        if before is not None:
            self.rows += dbapi_conn.total_changes - before

    async def turn(self) -> None:
        if self._turn("go") != w.ANSWER:
            raise RuntimeError("a DBOS turn did not end with the answer")

    def counters(self) -> dict[str, int]:
        return (
            {"commits": self.commits, "rows": self.rows}
            if self.sqlite
            else {"commits": self.commits}
        )

    async def close(self) -> None:
        self.DBOS.destroy(destroy_registry=True)


# ---- the run -------------------------------------------------------------------------------


def _sizes(quick: bool) -> tuple[int, int, int, int]:
    """(repetitions, turns per repetition and system, raw commits per repetition, counted)"""
    return (2, 2, 20, 2) if quick else (5, 40, 400, 5)


async def _measure(
    systems: list[System], raw: Callable[[int], float], quick: bool
) -> dict[str, Any]:
    reps, turns, raw_commits, counted = _sizes(quick)
    for system in systems:
        await system.time_turns(2)  # warm up: imports, schemas, caches
    times: dict[str, list[float]] = {s.name: [] for s in systems}
    raws: list[float] = []
    for rep in range(reps):
        shift = rep % len(systems)
        for system in systems[shift:] + systems[:shift]:
            times[system.name].append(await system.time_turns(turns))
        raws.append(raw(raw_commits))
    base = systems[0].name  # the reference: orchestrion at its like-for-like durability
    rows = []
    for system in systems:
        counts = await system.count(counted)
        ratios = [t / b for t, b in zip(times[system.name], times[base], strict=True)]
        rows.append(
            {
                "system": system.name,
                "us_per_tool_call": round(w.median(times[system.name]), 1),
                "ratio_to_reference": round(w.median(ratios), 2),
                "commits_per_turn": counts.get("commits"),
                "rows_per_turn": counts.get("rows"),
                "fsync": system.fsync,
                "per_step": system.per_step,
            }
        )
    return {
        "reference": base,
        "systems": rows,
        "raw_commit_us": round(w.median(raws), 1),
        "turns_per_system": reps * turns,
        "repetitions": reps,
        "counted_turns": counted,
    }


def _table(result: dict[str, Any], where: str, raw_label: str) -> list[str]:
    lines = [
        f"peers on {where}: the same turn (a model step calls a no-op tool, {w.TOOL_CALLS} "
        "times in sequence, then answers: 11 model steps and 10 tool steps), one process",
        f"  {result['turns_per_system']} turns per system in {result['repetitions']} "
        "repetitions interleaved across systems; medians; µs per tool call = turn time / 10; "
        f"ratio = system / {result['reference']} (per repetition, median)",
        f"  {'system':46} {'µs/tool call':>12} {'ratio':>7} {'commits/turn':>13} {'rows/turn':>10}",
    ]
    for row in result["systems"]:
        rows = "-" if row["rows_per_turn"] is None else f"{row['rows_per_turn']:g}"
        lines.append(
            f"  {row['system']:46} {row['us_per_tool_call']:>12.1f} "
            f"{row['ratio_to_reference']:>7.2f} {row['commits_per_turn']:>13g} {rows:>10}"
        )
    lines.append(f"  {raw_label:46} {result['raw_commit_us']:>12.1f}   (µs per commit)")
    lines.append("  what each row measures (end to end, per turn; commits counted, not assumed):")
    for row in result["systems"]:
        lines.append(f"    {row['system']}: {row['fsync']}; {row['per_step']}")
    return lines


def _ratio(result: dict[str, Any], name_start: str) -> float | None:
    for row in result["systems"]:
        if row["system"].startswith(name_start):
            return float(row["ratio_to_reference"])
    return None


def _verdict(ratio: float | None, target: float) -> str:
    if ratio is None:
        return "not measured"
    return f"{ratio:.2f}x ({'met' if ratio >= target else 'NOT met'})"


async def _sqlite_peers(base: Path, quick: bool) -> dict[str, Any]:
    raw = w.RawSQLiteCommit(base / "raw.db", "FULL")
    langgraph = LangGraphSQLite(base / "langgraph.sqlite")
    systems: list[System] = []
    try:
        for durability in ("full", "normal"):
            url = f"sqlite:///{base / f'orchestrion-{durability}.db'}"
            systems.append(await OrchestrionSystem(url, durability).open())
        systems += langgraph.systems()
        systems.append(DBOSSystem(f"sqlite:///{base / 'dbos.sqlite'}", None))
        return await _measure(systems, raw.measure, quick)
    finally:
        for system in systems:
            await system.close()
        langgraph.close()
        raw.close()


async def _postgres_peers(
    url: str, conninfo: str, schema: w.Schemas, quick: bool
) -> dict[str, Any]:
    raw = w.RawPostgresCommit(conninfo, schema("raw"))
    langgraph = LangGraphPostgres(conninfo, schema("langgraph"))
    systems: list[System] = []
    try:
        orx_url = w.pg_schema_url(url, schema("orchestrion"))
        systems.append(await OrchestrionSystem(orx_url, None).open())
        systems += langgraph.systems()
        systems.append(DBOSSystem(conninfo, schema("dbos")))
        return await _measure(systems, raw.measure, quick)
    finally:
        for system in systems:
            await system.close()
        langgraph.close()
        raw.close()


def run(quick: bool = False, store: str | None = None) -> dict[str, Any]:
    missing = missing_extra()
    if missing:
        raise click.ClickException(INSTALL)
    if w.is_postgres(store):
        assert store is not None
        from orchestrion.store.postgres import parse_postgres_url

        conninfo, _schema, where = parse_postgres_url(store)
        with w.pg_schemas(conninfo) as schema:
            result = asyncio.run(_postgres_peers(store, conninfo, schema, quick))
        result["throwaway_prefix"] = schema.prefix
        result["store"] = "postgresql"
        lines = _table(
            result, f"PostgreSQL at {where} (throwaway schemas)", "raw single-row INSERT commit"
        )
        lines.append(
            "  targets (issue 19): LangGraph PostgresSaver ('async') / orchestrion >= 2: "
            f"{_verdict(_ratio(result, 'LangGraph PostgresSaver'), 2)}; DBOS / orchestrion "
            f">= 4: {_verdict(_ratio(result, 'DBOS'), 4)}"
        )
    else:
        near = w.sqlite_folder(store, "peers")
        with tempfile.TemporaryDirectory(prefix="orchestrion-bench-", dir=near) as folder:
            result = asyncio.run(_sqlite_peers(Path(folder), quick))
        result["store"] = "sqlite"
        where = f"SQLite (temporary files in {near or tempfile.gettempdir()})"
        lines = _table(result, where, "raw SQLite WAL commit, synchronous=FULL")
        lines.append(
            "  target (issue 12): LangGraph SqliteSaver ('async', its default) / orchestrion "
            f"at durability full >= 3: {_verdict(_ratio(result, 'LangGraph SqliteSaver'), 3)}"
        )
    result["lines"] = lines
    return result
