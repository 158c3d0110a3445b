/**
 * A worker process of the W4b and W6 benchmarks (started by `spawnWorker` in `Harness.ts`):
 *
 *   FIBERGRAPH_BENCH_DATABASE_URL=postgres://… node --import tsx bench/worker-child.ts '<options-json>'
 *
 * Opens its pool on the (already migrated) database, registers the bench chain and prints `ready`;
 * after a `go` line on stdin it runs `Worker.layer` until SIGTERM (which drains it) or SIGKILL.
 * Each claim attempt and wake-up notification is reported on stdout with its instant (`WorkerLine`).
 * A closed stdin means the bench is gone: the process then stops as on SIGTERM (and exits within 10 s).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { Array as Arr, Config, Duration, Effect, Layer, Option, Schema, Stream } from "effect"
import { writeSync } from "node:fs"
import { CircuitBreaker, GraphRegistry, Runner, RunStoreSql, Worker, WorkQueueSql } from "../src/index.js"
import { WorkQueue } from "../src/services/WorkQueue.js"
import { epochMs, goLine, StderrLogger, WorkerLine, WorkerProcessOptions, workerUrlVariable } from "./Harness.js"
import { fleetChain } from "./W4b.js"

const encodeLine = Schema.encodeSync(WorkerLine)

/** Writes one line synchronously, so the bench sees it even if the process is killed right after. */
const emit = (line: WorkerLine) => Effect.sync(() => writeSync(1, `${JSON.stringify(encodeLine(line))}\n`))

/** The SQL queue, reporting every claim attempt (when its statement returned) and every wake-up. */
const ReportingQueue = Layer.effect(
  WorkQueue,
  Effect.map(WorkQueueSql.make, (queue) =>
    WorkQueue.of({
      ...queue,
      claim: (workerId, options) =>
        Effect.tap(queue.claim(workerId, options), (claim) =>
          Effect.flatMap(epochMs, (at) =>
            emit(
              Option.isSome(claim)
                ? { _tag: "claimed", runId: claim.value.run.runId, epoch: claim.value.epoch, at }
                : { _tag: "empty", at }
            ))),
      wakeups: Stream.tap(queue.wakeups, () => Effect.flatMap(epochMs, (at) => emit({ _tag: "wake", at })))
    }))
)

/** Completes on the first `go` line on stdin. */
const awaitGo = Effect.async<void>((resume) => {
  let buffered = ""
  const onData = (chunk: string) => {
    buffered += chunk
    if (buffered.split("\n").some((line) => line.trim() === goLine)) {
      process.stdin.off("data", onData)
      resume(Effect.void)
    }
  }
  process.stdin.on("data", onData)
  return Effect.sync(() => {
    process.stdin.off("data", onData)
  })
})

const program = Effect.gen(function*() {
  const options = yield* Schema.decodeUnknown(Schema.parseJson(WorkerProcessOptions))(process.argv[2])
  const url = yield* Config.redacted(workerUrlVariable)
  const graph = yield* fleetChain(options.graphId, options.nodeMillis)
  yield* Effect.sync(() => {
    process.stdin.setEncoding("utf8")
    process.stdin.on("end", () => {
      process.kill(process.pid, "SIGTERM")
      setTimeout(() => process.exit(1), 10_000).unref()
    })
  })

  const Sql = PgClient.layer({
    url,
    applicationName: options.workerId,
    maxConnections: options.pool,
    minConnections: options.pool,
    idleTimeout: Duration.minutes(10),
    connectTimeout: Duration.seconds(10)
  })
  const Store = RunStoreSql.layer().pipe(Layer.provideMerge(Sql))
  const Queue = ReportingQueue.pipe(Layer.provideMerge(Store))
  const Run = Runner.layer().pipe(Layer.provideMerge(Layer.merge(Queue, CircuitBreaker.layer)))
  const Base = GraphRegistry.layer([graph]).pipe(Layer.provideMerge(Run))
  const Fleet = Worker.layer({
    workerId: options.workerId,
    concurrency: options.concurrency,
    lease: Duration.millis(options.leaseMillis),
    heartbeat: Duration.millis(options.heartbeatMillis),
    poll: Duration.millis(options.pollMillis),
    shutdownGrace: "5 seconds"
  })

  return yield* Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.forEach(Arr.range(1, options.pool), () => sql`SELECT pg_sleep(0.02)`, {
      concurrency: options.pool,
      discard: true
    })
    yield* emit({ _tag: "ready", pid: process.pid })
    yield* awaitGo
    return yield* Layer.launch(Fleet)
  }).pipe(Effect.provide(Base))
})

NodeRuntime.runMain(program.pipe(Effect.provide(StderrLogger)))
