/**
 * Durable runs on the SQL store, on the embedded engine and the Postgres server: a run taken up
 * by a new runner after its first stopped, graph versions (refused, or migrated when the new
 * version declares how), and stored history that is corrupt or truncated.
 */
import { assert, describe, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Schema } from "effect"
import * as CircuitBreaker from "../src/CircuitBreaker.js"
import * as Graph from "../src/Graph.js"
import * as Migrations from "../src/layers/sql/Migrations.js"
import * as RunStoreSql from "../src/layers/sql/RunStoreSql.js"
import { RunStore } from "../src/services/RunStore.js"
import * as State from "../src/State.js"
import { migratedClone } from "./support/Pglite.js"
import * as Postgres from "./support/Postgres.js"
import { comparable, openRunner } from "./util.js"

const V1 = State.define({
  topic: State.channel(Schema.String),
  notes: State.list(Schema.String),
  approved: State.channel(Schema.Boolean, { initial: () => false })
})

const v1 = Graph.make({ id: "durable", version: 1, state: V1 })
  .node("research", { writes: ["notes"] }, (ctx) => Effect.succeed({ notes: [`about ${ctx.state.topic}`] }))
  .node("review", { writes: ["approved"] }, (ctx) =>
    Effect.map(ctx.interrupt({ notes: ctx.state.notes }), (r) => ({ approved: r._tag === "approve" })))
  .node("publish", { writes: ["notes"] }, () => Effect.succeed({ notes: ["published"] }))
  .edge(Graph.START, "research")
  .edge("research", "review")
  .edge("review", "publish")
  .edge("publish", Graph.END)
  .compile

/** Version 2 stores notes as { text } records and declares how to carry a version-1 checkpoint over. */
const Note = Schema.Struct({ text: Schema.String })
const V2 = State.define({
  topic: State.channel(Schema.String),
  notes: State.list(Note),
  approved: State.channel(Schema.Boolean, { initial: () => false })
})
const V1State = Schema.Struct({ topic: Schema.String, notes: Schema.Array(Schema.String), approved: Schema.Boolean })

const v2 = Graph.make({ id: "durable", version: 2, state: V2 })
  .node("research", { writes: ["notes"] }, (ctx) => Effect.succeed({ notes: [{ text: `about ${ctx.state.topic}` }] }))
  .node("review", { writes: ["approved"] }, (ctx) =>
    Effect.map(ctx.interrupt({ notes: ctx.state.notes }), (r) => ({ approved: r._tag === "approve" })))
  .node("publish", { writes: ["notes"] }, () => Effect.succeed({ notes: [{ text: "published" }] }))
  .edge(Graph.START, "research")
  .edge("research", "review")
  .edge("review", "publish")
  .edge("publish", Graph.END)
  .migrateFrom(1, V1State, (old) => ({ ...old, notes: old.notes.map((text) => ({ text })) }))

const v2WithoutMigration = Graph.make({ id: "durable", version: 2, state: V2 })
  .node("research", { writes: ["notes"] }, () => Effect.succeed({}))
  .edge(Graph.START, "research")
  .edge("research", Graph.END)
  .compile

const engines = [
  { name: "embedded", layer: migratedClone, run: true },
  { name: "server", layer: Postgres.migratedDatabase(), run: Postgres.available }
] as const

for (const engine of engines) {
  const StoreLayer = RunStoreSql.layer().pipe(Layer.provideMerge(engine.layer), Layer.provideMerge(CircuitBreaker.layer))

  describe.runIf(engine.run)(`durable runs (${engine.name})`, () => {
    it.layer(StoreLayer, { timeout: 120_000 })((it) => {
      it.effect("a run stopped while waiting is taken up by a new runner and ends as an uninterrupted run", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const graph = yield* v1
          const first = yield* openRunner(store)
          const handle = yield* first.runner.start(graph, { topic: "tides" })
          const waiting = yield* handle.result
          assert.strictEqual(waiting.status, "waiting")
          yield* first.stop

          const second = yield* openRunner(store)
          yield* second.runner.respond(graph, handle.runId, { _tag: "approve" })
          const done = yield* second.runner.result(graph, handle.runId)
          yield* second.stop
          assert.strictEqual(done.status, "completed")
          assert.deepStrictEqual(done.state, { topic: "tides", notes: ["about tides", "published"], approved: true })

          const reference = yield* openRunner(store)
          const again = yield* reference.runner.start(graph, { topic: "tides" })
          assert.strictEqual((yield* again.result).status, "waiting")
          yield* reference.runner.respond(graph, again.runId, { _tag: "approve" })
          const referenceResult = yield* again.result
          yield* reference.stop
          assert.deepStrictEqual(referenceResult.state, done.state)
          const events = yield* store.events(handle.runId, 0)
          const referenceEvents = yield* store.events(again.runId, 0)
          assert.deepStrictEqual(comparable(events), comparable(referenceEvents))
          assert.deepStrictEqual(events.map((e) => e.seq), events.map((_, i) => i + 1))
        }))

      it.effect("a stored run is refused by a graph version that does not declare a migration, naming both", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const first = yield* openRunner(store)
          const handle = yield* first.runner.start(yield* v1, { topic: "tides" })
          yield* handle.result
          yield* first.stop
          const second = yield* openRunner(store)
          const error = yield* Effect.flip(second.runner.resume(yield* v2WithoutMigration, handle.runId))
          yield* second.stop
          assert.strictEqual(error._tag, "GraphMismatchError")
          assert.include(error.message, "version 1")
          assert.include(error.message, "not version 2")
        }))

      it.effect("a graph version that declares a migration carries the stored checkpoint over and continues", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const old = yield* v1
          const first = yield* openRunner(store)
          const handle = yield* first.runner.start(old, { topic: "tides" })
          assert.strictEqual((yield* handle.result).status, "waiting")
          yield* first.stop

          const graph = yield* v2.compile
          assert.notStrictEqual(graph.hash, old.hash)
          const second = yield* openRunner(store)
          yield* second.runner.respond(graph, handle.runId, { _tag: "approve" })
          const done = yield* second.runner.result(graph, handle.runId)
          yield* second.stop
          assert.strictEqual(done.status, "completed")
          assert.deepStrictEqual(done.state, {
            topic: "tides",
            notes: [{ text: "about tides" }, { text: "published" }],
            approved: true
          })
          const run = yield* store.get(handle.runId)
          assert.strictEqual(run.graphVersion, "2")
          assert.strictEqual(run.graphHash, graph.hash)
          const events = yield* store.events(handle.runId, 0)
          const migrated = events.find((e) => e._tag === "RunMigrated")
          assert.deepStrictEqual(migrated && { from: migrated.fromVersion, to: migrated.toVersion }, { from: "1", to: "2" })
          const third = yield* openRunner(store)
          const error = yield* Effect.flip(third.runner.resume(old, handle.runId))
          yield* third.stop
          assert.strictEqual(error._tag, "GraphMismatchError")
        }))

      it.effect("a corrupted event payload is refused with EventLogCorruptionError naming the sequence", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const sql = yield* SqlClient.SqlClient
          const runner = yield* openRunner(store)
          const handle = yield* runner.runner.start(yield* v1, { topic: "tides" })
          yield* handle.result
          yield* runner.stop
          yield* sql`UPDATE fibergraph.events SET body = '{"_tag":"NodeStarted","seq":"x"}'::jsonb
                     WHERE run_id = ${handle.runId} AND seq = 3`
          const read = yield* Effect.flip(store.events(handle.runId, 0))
          assert.strictEqual(read._tag, "EventLogCorruptionError")
          assert.include(read.message, "event 3 does not decode")
          assert.deepStrictEqual((yield* store.events(handle.runId, 3)).map((e) => e.seq)[0], 4)
        }))

      it.effect("a truncated event log is refused, naming where it ends and where it should", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const sql = yield* SqlClient.SqlClient
          const runner = yield* openRunner(store)
          const handle = yield* runner.runner.start(yield* v1, { topic: "tides" })
          yield* handle.result
          yield* runner.stop
          const run = yield* store.get(handle.runId)
          yield* sql`DELETE FROM fibergraph.events WHERE run_id = ${handle.runId} AND seq >= ${run.lastSeq - 1}`
          const read = yield* Effect.flip(store.events(handle.runId, 0))
          assert.strictEqual(read._tag, "EventLogCorruptionError")
          assert.include(read.message, `ends at sequence ${run.lastSeq - 2} but the run has committed up to ${run.lastSeq}`)
        }))

      it.effect("a corrupted checkpoint is refused on resume, naming the checkpoint and the key", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const sql = yield* SqlClient.SqlClient
          const graph = yield* v1
          const first = yield* openRunner(store)
          const handle = yield* first.runner.start(graph, { topic: "tides" })
          yield* handle.result
          yield* first.stop
          yield* sql`UPDATE fibergraph.checkpoints SET state = jsonb_set(state, '{topic}', '5')
                     WHERE run_id = ${handle.runId}`
          const second = yield* openRunner(store)
          const error = yield* Effect.flip(second.runner.respond(graph, handle.runId, { _tag: "approve" }))
          yield* second.stop
          assert.strictEqual(error._tag, "EventLogCorruptionError")
          assert.include(error.message, "topic")
          assert.strictEqual((yield* store.get(handle.runId)).status, "waiting")
        }))

      it.effect("a database with a newer schema than the code is refused, and an older one is reported by check", () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const code = yield* Migrations.codeVersion
          yield* Migrations.check
          yield* sql`INSERT INTO fibergraph.migrations (migration_id, name) VALUES (${code + 1}, 'from_the_future')`
          const refused = yield* Effect.flip(Migrations.migrate)
          assert.strictEqual(refused._tag, "SchemaVersionError")
          assert.include(refused.message, `version ${code + 1}`)
          const checked = yield* Effect.flip(Migrations.check)
          assert.strictEqual(checked._tag, "SchemaVersionError")
          yield* sql`DELETE FROM fibergraph.migrations WHERE migration_id = ${code + 1}`
          yield* Migrations.migrate
          yield* Migrations.check
        }))

      it.effect("SQL-hostile run ids and tenants run and round-trip", () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const graph = yield* v1
          const runner = yield* openRunner(store)
          const runId = `'; DROP TABLE fibergraph.runs; -- ${Math.random()}`
          const tenant = `t"en'ant\\ ${"x".repeat(300)}`
          const handle = yield* runner.runner.start(graph, { topic: "Robert'); --" }, { runId, tenant })
          const result = yield* handle.result
          yield* runner.stop
          assert.strictEqual(result.status, "waiting")
          const run = yield* store.get(runId)
          assert.strictEqual(run.tenant, tenant)
          const listed = yield* store.list({ tenant })
          assert.deepStrictEqual(listed.map((r) => r.runId), [runId])
        }))
    })
  })
}
