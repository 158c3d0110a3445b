/**
 * Interrupting store calls never cancels somebody else's statement. `@effect/sql-pg` answers an
 * interrupt mid-statement with `pg_cancel_backend(pid)`; when the statement had already finished
 * and its connection was back in the pool, that cancel lands on another fiber's statement
 * (SQLSTATE 57014). On a small pool, hundreds of store calls are interrupted at random points
 * while bystander fibers read and write through the same store: no bystander call may fail.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as PgClient from "@effect/sql-pg/PgClient"
import { assert, describe, layer } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Option, Random, Redacted, Ref } from "effect"
import { randomUUID } from "node:crypto"
import * as Migrations from "../../../src/layers/sql/Migrations.js"
import * as RunStoreSql from "../../../src/layers/sql/RunStoreSql.js"
import * as WorkQueueSql from "../../../src/layers/sql/WorkQueueSql.js"
import { RunStore } from "../../../src/services/RunStore.js"
import { WorkQueue } from "../../../src/services/WorkQueue.js"
import { makeCheckpoint, makeCommit, makeEvents, makeRun, runStarted, uniqueId } from "../../contracts/RunStore.js"
import * as Postgres from "../../support/Postgres.js"

const POOL = 3
const INTERRUPTED = 500
const BYSTANDERS = 4

/** A fresh migrated database on the server, reached through a pool of `POOL` connections. */
const smallPool = Layer.unwrapScoped(Effect.gen(function*() {
  const name = `fg_cancel_${randomUUID().replace(/-/g, "").slice(0, 16)}`
  const admin = yield* PgClient.make({ url: Redacted.make(Postgres.serverUrl), maxConnections: 1 })
  yield* Effect.acquireRelease(
    admin`CREATE DATABASE ${admin(name)}`,
    () => Effect.ignore(admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`)
  )
  return Layer.effectDiscard(Migrations.migrate).pipe(
    Layer.provideMerge(PgClient.layer({ url: Redacted.make(Postgres.urlFor(name)), maxConnections: POOL }))
  )
}).pipe(Effect.provide(Reactivity.layer)))

const backend = WorkQueueSql.layer.pipe(Layer.provideMerge(RunStoreSql.layer()), Layer.provide(smallPool))

/** Creates a run with a few committed steps, so reads have rows to return. */
const seedRun = Effect.gen(function*() {
  const store = yield* RunStore
  let run = makeRun({ runId: uniqueId("cancel") })
  yield* store.create(run, [runStarted(run)], makeCheckpoint(run.runId, 1, 0))
  run = yield* store.acquire(run.runId)
  for (let step = 1; step <= 3; step++) {
    run = yield* store.commit(makeCommit(run, {
      events: makeEvents(run.runId, run.lastSeq + 1, 3, step),
      checkpoint: makeCheckpoint(run.runId, run.lastSeq + 3, step)
    }))
  }
  return run
})

/** The first line of a failure, with the SQLSTATE of the database error under it. */
const describeFailure = (cause: Cause.Cause<unknown>) => {
  const line = Cause.pretty(cause).split("\n")[0] ?? ""
  let error: unknown = Cause.squash(cause)
  while (typeof error === "object" && error !== null) {
    if ("code" in error && typeof error.code === "string") return `${line} (SQLSTATE ${error.code})`
    error = "cause" in error ? error.cause : undefined
  }
  return line
}

describe.runIf(Postgres.available)("server", () => {
  layer(backend, { excludeTestServices: true, timeout: "60 seconds" })("SQL store calls and interrupts", (it) => {
    it.effect(
      `interrupting ${INTERRUPTED} in-flight store calls on a pool of ${POOL} fails none of the calls nobody interrupted`,
      () =>
        Effect.gen(function*() {
          const store = yield* RunStore
          const queue = yield* WorkQueue
          const runs = yield* Effect.all(Array.from({ length: 8 }, () => seedRun), { concurrency: 4 })
          const pickRun = Effect.map(Random.nextIntBetween(0, runs.length), (i) => runs[i]!)

          const victims: ReadonlyArray<Effect.Effect<unknown, unknown>> = [
            Effect.flatMap(pickRun, (run) => store.get(run.runId)),
            Effect.flatMap(pickRun, (run) => store.events(run.runId, 0)),
            Effect.flatMap(pickRun, (run) => store.latestCheckpoint(run.runId)),
            store.list({ limit: 20 }),
            queue.depth(0),
            Effect.flatMap(pickRun, (run) => queue.jobsOf(run.runId)),
            Effect.flatMap(pickRun, (run) => store.acquire(run.runId)),
            Effect.flatMap(pickRun, (run) => queue.enqueue(run.runId, { now: run.createdAt, availableAt: 0 }))
          ]

          const done = yield* Ref.make(false)
          const calls = yield* Ref.make(0)
          const failures = yield* Ref.make<ReadonlyArray<string>>([])
          const own = yield* Effect.all(Array.from({ length: BYSTANDERS }, () => seedRun), { concurrency: 2 })
          const bystander = (i: number) =>
            Effect.gen(function*() {
              let run = own[i]!
              while (!(yield* Ref.get(done))) {
                const committed = yield* Effect.exit(
                  store.commit(makeCommit(run, { events: makeEvents(run.runId, run.lastSeq + 1, 1, run.step + 1) }))
                )
                const exits: ReadonlyArray<Exit.Exit<unknown, unknown>> = [
                  committed,
                  yield* Effect.exit(store.get(run.runId)),
                  yield* Effect.exit(store.events(run.runId, 0)),
                  yield* Effect.exit(store.list({ limit: 5 }))
                ]
                for (const exit of exits) {
                  yield* Ref.update(calls, (n) => n + 1)
                  if (Exit.isFailure(exit)) {
                    yield* Ref.update(failures, (all) => [...all, `bystander ${i}: ${describeFailure(exit.cause)}`])
                  }
                }
                if (Exit.isSuccess(committed)) run = committed.value
              }
            })

          const interrupter = Effect.gen(function*() {
              for (let i = 0; i < INTERRUPTED; i++) {
                const victim = victims[yield* Random.nextIntBetween(0, victims.length)]!
                const fiber = yield* Effect.fork(victim)
                const delay = yield* Random.nextIntBetween(0, 3)
                yield* delay === 0 ? Effect.yieldNow() : Effect.sleep(`${delay} millis`)
                yield* Fiber.interrupt(fiber)
              }
            })

          const bystanders = yield* Effect.forkAll(Array.from({ length: BYSTANDERS }, (_, i) => bystander(i)))
          yield* interrupter
          yield* Ref.set(done, true)
          yield* Fiber.join(bystanders)

          const failed = yield* Ref.get(failures)
          const total = yield* Ref.get(calls)
          assert.isAbove(total, 100, "the bystanders ran while the calls were interrupted")
          assert.deepStrictEqual(
            failed.slice(0, 5),
            [],
            `${failed.length} of ${total} bystander calls failed; the first ones are shown`
          )
          const after = yield* Effect.option(store.get(runs[0]!.runId))
          assert.isTrue(Option.isSome(after), "the store still answers")
        }),
      120_000
    )
  })
})
