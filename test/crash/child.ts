/**
 * The child process of the crash test:
 *
 *   node --import tsx test/crash/child.ts <embedded|server> <data-dir|postgres-url> <runId> <start|resume>
 *
 * Opens the store (an embedded PGlite data directory or a Postgres server), migrates it, starts
 * or resumes the crash graph's run, waits for it to settle and prints the result as one JSON
 * line. With `FIBERGRAPH_CRASH_MARKERS=1` it also prints a line just before and just after each
 * step commit, so the parent can SIGKILL it at a commit boundary.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Config, Effect, Layer, Option, Redacted, Schema } from "effect"
import { writeSync } from "node:fs"
import * as CircuitBreaker from "../../src/CircuitBreaker.js"
import * as Migrations from "../../src/layers/sql/Migrations.js"
import * as RunStoreSql from "../../src/layers/sql/RunStoreSql.js"
import * as Runner from "../../src/Runner.js"
import { RunStore } from "../../src/services/RunStore.js"
import { createEffectsTable, graph } from "./CrashGraph.js"
import { Args, Line, markersVariable } from "./Protocol.js"

const encodeLine = Schema.encodeSync(Line)

/** Writes one protocol line synchronously: once the parent reads it, the child has passed that point. */
const emit = (line: Line) => Effect.sync(() => writeSync(1, `${JSON.stringify(encodeLine(line))}\n`))

/** The SQL store, with a `commit` line printed before and a `committed` line after each step commit when asked. */
const MarkedStore = Layer.effect(
  RunStore,
  Effect.gen(function*() {
    const store = yield* RunStoreSql.make()
    const markers = yield* Config.boolean(markersVariable).pipe(Config.withDefault(false))
    if (!markers) return store
    let commits = 0
    return RunStore.of({
      ...store,
      commit: (c) =>
        Effect.suspend(() => {
          const n = ++commits
          return emit({ _tag: "commit", n, step: c.expectedStep, firstSeq: c.events[0]?.seq ?? 0 }).pipe(
            Effect.zipRight(store.commit(c)),
            Effect.tap(() => emit({ _tag: "committed", n, step: c.expectedStep }))
          )
        })
    })
  })
)

/** The engine's `SqlClient`; PGlite is loaded only when used, since loading it costs a server child half a second. */
const sqlLayer = (engine: typeof Args.Type[0], location: string): Layer.Layer<SqlClient.SqlClient, unknown> =>
  engine === "embedded"
    ? Layer.unwrapEffect(
      Effect.map(
        Effect.promise(() => import("../../src/layers/sql/PgliteClient.js")),
        (PgliteClient) => PgliteClient.layer({ dataDir: location })
      )
    )
    : PgClient.layer({ url: Redacted.make(location), maxConnections: 4 })

const program = Effect.gen(function*() {
  const [engine, location, runId, mode] = yield* Schema.decodeUnknown(Args)(process.argv.slice(2))
  const Main = Runner.layer().pipe(
    Layer.provideMerge(Layer.merge(MarkedStore, CircuitBreaker.layer)),
    Layer.provideMerge(sqlLayer(engine, location))
  )
  yield* Effect.gen(function*() {
    yield* Migrations.migrate
    yield* createEffectsTable
    const store = yield* RunStore
    const runner = yield* Runner.Runner
    const compiled = yield* graph
    const stored = yield* Effect.option(store.get(runId))
    yield* emit({
      _tag: "ready",
      pid: process.pid,
      mode,
      stored: Option.match(stored, {
        onNone: () => null,
        onSome: (run) => ({ status: run.status, step: run.step, lastSeq: run.lastSeq, claimEpoch: run.claimEpoch })
      })
    })
    const handle = mode === "start"
      ? yield* runner.start(compiled, {}, { runId })
      : yield* runner.resume(compiled, runId)
    yield* emit({ _tag: "started", runId })
    const result = yield* handle.result
    yield* emit({ _tag: "result", status: result.status, step: result.step, state: result.state })
  }).pipe(Effect.provide(Main))
})

NodeRuntime.runMain(
  program.pipe(
    Effect.tapErrorCause((cause) => emit({ _tag: "error", message: Cause.pretty(cause) }))
  ),
  { disableErrorReporting: true }
)
