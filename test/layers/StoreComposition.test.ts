/**
 * One store per backend: a queue takes its runs from its own backend, so a queue cannot be put
 * over another backend's run store (checked by `tsc`), and `Store.layer` provides the run store
 * and the queue of one backend together.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, expectTypeOf, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as MemoryStore from "../../src/layers/memory/MemoryStore.js"
import * as RunStoreMemory from "../../src/layers/memory/RunStoreMemory.js"
import * as WorkQueueMemory from "../../src/layers/memory/WorkQueueMemory.js"
import * as RunStoreSql from "../../src/layers/sql/RunStoreSql.js"
import * as SqlStore from "../../src/layers/sql/SqlStore.js"
import * as WorkQueueSql from "../../src/layers/sql/WorkQueueSql.js"
import * as Store from "../../src/layers/Store.js"
import type { CallJournal } from "../../src/services/CallJournal.js"
import { RunStore } from "../../src/services/RunStore.js"
import { WorkQueue } from "../../src/services/WorkQueue.js"
import { makeCheckpoint, makeRun, runStarted, uniqueId } from "../contracts/RunStore.js"

describe("store composition", () => {
  it("each queue layer needs only its own backend", () => {
    expectTypeOf(WorkQueueSql.layer).toEqualTypeOf<Layer.Layer<WorkQueue, never, SqlClient.SqlClient>>()
    expectTypeOf(WorkQueueMemory.layer).toEqualTypeOf<Layer.Layer<WorkQueue, never, RunStoreMemory.Runs>>()
    expectTypeOf(SqlStore.layer()).toEqualTypeOf<
      Layer.Layer<RunStore | WorkQueue | CallJournal, never, SqlClient.SqlClient>
    >()
    expectTypeOf(MemoryStore.layer()).toEqualTypeOf<
      Layer.Layer<RunStore | WorkQueue | RunStoreMemory.Runs | CallJournal>
    >()
    // @ts-expect-error the memory queue cannot run over a SQL run store: it needs the memory store's runs
    const memoryQueueOverSql: Layer.Layer<RunStore | WorkQueue, never, SqlClient.SqlClient> = WorkQueueMemory.layer.pipe(
      Layer.provideMerge(RunStoreSql.layer())
    )
    assert.isDefined(memoryQueueOverSql)
  })

  it.effect("Store.layer gives the run store and the queue of one backend", () =>
    Effect.gen(function*() {
      const queue = yield* WorkQueue
      const store = yield* RunStore
      const opened = yield* Store.Store
      const run = makeRun({ runId: uniqueId("composed") })
      const { job } = yield* queue.submit(run, [runStarted(run)], makeCheckpoint(run.runId, 1, 0))
      assert.deepStrictEqual(yield* store.get(run.runId), run, "the queue's run is in the run store")
      assert.strictEqual(opened.workQueue, queue)
      assert.strictEqual(opened.runStore, store)
      const claim = yield* queue.claim("worker", { now: run.createdAt, leaseMillis: 1_000 })
      assert.strictEqual(Option.getOrThrow(claim).job.jobId, job.jobId)
      assert.strictEqual((yield* store.get(run.runId)).claimEpoch, run.claimEpoch + 1, "the claim bumped the store's run")
    }).pipe(Effect.provide(Store.layer({ url: "memory://" }))))
})
