/**
 * `fibergraph worker`: a worker process. It opens the store, loads the graph module, serves
 * `/healthz`, `/readyz` and `/metrics`, then claims and runs jobs until SIGTERM or SIGINT; then
 * it stops claiming, gives in-flight runs the grace period, releases the rest and exits 0.
 *
 * Resources open in this order and close in the reverse one, so the HTTP server outlives the
 * drain (`/readyz` answers 503 while the worker drains) and the store outlives both.
 */
import { Command, Options } from "@effect/cli"
import * as HttpServer from "@effect/platform/HttpServer"
import { Config, Context, Duration, Effect, Layer, Option, Ref, Schema } from "effect"
import * as Store from "../layers/Store.js"
import { WorkQueue } from "../services/WorkQueue.js"
import * as Worker from "../Worker.js"
import { integerIn, durationOption, graphsOption, runtimeLayer, storeOption } from "./Common.js"
import * as GraphModule from "./GraphModule.js"
import * as Health from "./Health.js"

/** Defaults of the worker's options. */
export const defaults = {
  concurrency: 4,
  lease: Duration.seconds(30),
  grace: Duration.seconds(10),
  port: 9464
} as const

/** Worker options that contradict each other. */
export class WorkerOptionsError extends Schema.TaggedError<WorkerOptionsError>()("WorkerOptionsError", {
  reason: Schema.String
}) {
  override get message() {
    return `invalid worker options: ${this.reason}`
  }
}

/** The options of a worker process, as parsed from flags and the environment. */
export interface WorkerOptions {
  readonly store: Option.Option<string>
  readonly graphs: Option.Option<string>
  readonly concurrency: number
  readonly lease: Option.Option<Duration.Duration>
  readonly heartbeat: Option.Option<Duration.Duration>
  readonly grace: Option.Option<Duration.Duration>
  readonly poll: Option.Option<Duration.Duration>
  readonly port: number
  readonly workerId: Option.Option<string>
}

/** Checks the options and turns them into `Worker.Options`. */
export const workerOptions = (options: WorkerOptions): Effect.Effect<Worker.Options, WorkerOptionsError> =>
  Effect.gen(function*() {
    const lease = Option.getOrElse(options.lease, () => defaults.lease)
    if (Duration.toMillis(lease) < 100) {
      return yield* new WorkerOptionsError({ reason: `--lease ${Duration.format(lease)} is too short; use at least 100ms` })
    }
    if (Option.isSome(options.heartbeat) && Duration.greaterThanOrEqualTo(options.heartbeat.value, lease)) {
      return yield* new WorkerOptionsError({
        reason: `--heartbeat ${Duration.format(options.heartbeat.value)} must be shorter than --lease ${Duration.format(lease)} ` +
          "(a third of it is a good choice)"
      })
    }
    return {
      concurrency: options.concurrency,
      lease,
      shutdownGrace: Option.getOrElse(options.grace, () => defaults.grace),
      ...Option.match(options.heartbeat, { onNone: () => ({}), onSome: (heartbeat) => ({ heartbeat }) }),
      ...Option.match(options.poll, { onNone: () => ({}), onSome: (poll) => ({ poll }) }),
      ...Option.match(options.workerId, { onNone: () => ({}), onSome: (workerId) => ({ workerId }) })
    } satisfies Worker.Options
  })

/** Runs a worker until interrupted (SIGTERM/SIGINT through `NodeRuntime.runMain`). */
export const run = (options: WorkerOptions) =>
  Effect.gen(function*() {
    const config = yield* workerOptions(options)
    const module = yield* GraphModule.required(options.graphs)
    yield* Effect.addFinalizer(() => Effect.logInfo("worker process exiting"))

    const runtime = yield* Layer.build(runtimeLayer(options.store))
    const store = Context.get(runtime, Store.Store)
    const current = yield* Ref.make(Option.none<Worker.WorkflowWorker["Type"]>())
    const probe: Health.Probe = {
      store,
      queue: Context.get(runtime, WorkQueue),
      concurrency: options.concurrency,
      worker: Effect.flatMap(Ref.get(current), (worker) =>
        Option.match(worker, { onNone: () => Effect.succeedNone, onSome: (w) => Effect.asSome(w.status) }))
    }
    const http = yield* Layer.build(Health.layer(probe, options.port))
    const address = yield* Effect.provide(HttpServer.addressWith(Effect.succeed), http)
    const port = address._tag === "TcpAddress" ? address.port : null
    const where = address._tag === "TcpAddress" ? `port ${address.port}` : address.path
    yield* Effect.logInfo(`serving /healthz, /readyz and /metrics on ${where}`).pipe(
      Effect.annotateLogs({ event: "HttpListening", port })
    )

    const registry = yield* Layer.build(GraphModule.registryLayer(module))
    const workerContext = yield* Layer.build(Worker.layer(config)).pipe(Effect.provide(Context.merge(runtime, registry)))
    const worker = Context.get(workerContext, Worker.WorkflowWorker)
    yield* Ref.set(current, Option.some(worker))
    yield* Effect.addFinalizer(() =>
      Effect.logInfo(
        `stopping: no new claims; in-flight runs have ${Duration.format(config.shutdownGrace ?? defaults.grace)} to settle`
      ).pipe(Effect.annotateLogs({ event: "WorkerDraining" }))
    )

    const status = yield* worker.status
    yield* Effect.logInfo(`worker ${status.workerId} started`).pipe(
      Effect.annotateLogs({
        event: "WorkerStarted",
        workerId: status.workerId,
        store: store.url,
        graphs: module.graphs.map((g) => `${g.id}@${g.version}`),
        concurrency: options.concurrency,
        leaseMillis: Duration.toMillis(config.lease ?? defaults.lease),
        port
      })
    )
    return yield* Effect.never
  }).pipe(Effect.scoped)

const portOption = Options.integer("port").pipe(
  Options.withPseudoName("PORT"),
  Options.withDescription("the port of /healthz, /readyz and /metrics (default 9464; 0 picks a free one) (env: FIBERGRAPH_PORT)"),
  Options.withFallbackConfig(Config.integer("FIBERGRAPH_PORT")),
  Options.withDefault(defaults.port),
  Options.mapEffect(integerIn("port", 0, 65535))
)

/** The `worker` command. */
export const command = Command.make(
  "worker",
  {
    store: storeOption,
    graphs: graphsOption,
    concurrency: Options.integer("concurrency").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("runs held at once (default 4) (env: FIBERGRAPH_CONCURRENCY)"),
      Options.withFallbackConfig(Config.integer("FIBERGRAPH_CONCURRENCY")),
      Options.withDefault(defaults.concurrency),
      Options.mapEffect(integerIn("concurrency", 1))
    ),
    lease: durationOption("lease", "FIBERGRAPH_LEASE", "how long a claim lasts without a heartbeat (default 30s)"),
    heartbeat: durationOption("heartbeat", "FIBERGRAPH_HEARTBEAT", "how often a held claim is renewed (default a third of the lease)"),
    grace: durationOption(
      "grace",
      "FIBERGRAPH_SHUTDOWN_GRACE",
      "on SIGTERM/SIGINT, how long in-flight runs may take before their jobs are released (default 10s)"
    ),
    poll: durationOption("poll", "FIBERGRAPH_POLL", "the fallback poll when no wake-up arrives (default 2s, jittered)"),
    port: portOption,
    workerId: Options.text("worker-id").pipe(
      Options.withPseudoName("ID"),
      Options.withDescription("this worker's name in claims (default: host name and pid) (env: FIBERGRAPH_WORKER_ID)"),
      Options.withFallbackConfig(Config.string("FIBERGRAPH_WORKER_ID")),
      Options.optional
    )
  },
  run
).pipe(
  Command.withDescription(
    "run a worker: claim and run queued runs of the module's graphs, serve /healthz, /readyz and /metrics; " +
      "stops gracefully on SIGTERM or SIGINT"
  )
)
