/**
 * `fibergraph runs list | get | cancel | resume | approve | reject`: inspect and steer stored runs.
 * Commands that change a run write through the `Runner` (fenced like any other writer) and queue
 * the run for a worker when it can continue; none of them runs a graph's nodes itself.
 */
import { Args, Command, Options } from "@effect/cli"
import { Clock, Console, Effect, Option } from "effect"
import { RunStatusError } from "../Errors.js"
import type { HumanResponse } from "../Node.js"
import { Runner } from "../Runner.js"
import { type Checkpoint, type RunRecord, RunStatus, RunStore, terminalStatuses } from "../services/RunStore.js"
import { type Job, WorkQueue } from "../services/WorkQueue.js"
import * as Worker from "../Worker.js"
import { integerIn, graphsOption, jsonOption, parseJson, runtimeLayer, storeOption } from "./Common.js"
import * as GraphModule from "./GraphModule.js"
import { brief, fields, instant, printJson, spending, table } from "./Output.js"
import { findGraph } from "./Submit.js"

const runIdArg = Args.text({ name: "run-id" }).pipe(Args.withDescription("the run's id (run_…)"))

const nodeOption = Options.text("node").pipe(
  Options.withPseudoName("NODE"),
  Options.withDescription("answer only the interrupt of this node (default: every open interrupt)"),
  Options.optional
)

/** A run's row as a table row. */
const listRow = (run: RunRecord) => [
  run.runId,
  `${run.graphId}@${run.graphVersion}`,
  run.status,
  String(run.step),
  run.tenant,
  String(run.usage.total.tokens),
  instant(run.createdAt)
]

const list = Command.make(
  "list",
  {
    status: Options.choice("status", RunStatus.literals).pipe(
      Options.withDescription("only runs in this status (repeat for several)"),
      Options.repeated
    ),
    graph: Options.text("graph").pipe(Options.withPseudoName("GRAPH-ID"), Options.withDescription("only runs of this graph id"), Options.optional),
    tenant: Options.text("tenant").pipe(Options.withPseudoName("TENANT"), Options.withDescription("only runs of this tenant"), Options.optional),
    limit: Options.integer("limit").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("at most this many runs, newest first"),
      Options.withDefault(20),
      Options.mapEffect(integerIn("limit", 1))
    ),
    store: storeOption,
    json: jsonOption
  },
  (options) =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const runs = yield* store.list({
        limit: options.limit,
        ...(options.status.length === 0 ? {} : { status: options.status }),
        ...Option.match(options.graph, { onNone: () => ({}), onSome: (graphId) => ({ graphId }) }),
        ...Option.match(options.tenant, { onNone: () => ({}), onSome: (tenant) => ({ tenant }) })
      })
      if (options.json) return yield* printJson(runs)
      if (runs.length === 0) return yield* Console.log("no runs")
      yield* Console.log(table(["RUN", "GRAPH", "STATUS", "STEP", "TENANT", "TOKENS", "CREATED"], runs.map(listRow)))
    }).pipe(Effect.provide(runtimeLayer(options.store, "check")))
).pipe(Command.withDescription("list runs, newest first"))

/** What a run waits on, from its latest checkpoint. */
const interruptsOf = (run: RunRecord, checkpoint: Option.Option<Checkpoint>) =>
  run.status === "waiting" && Option.isSome(checkpoint)
    ? checkpoint.value.interrupts.filter((i) => !i.answered)
    : []

const jobLine = (job: Job) =>
  `${job.jobId}  ${job.status}  attempt ${job.attempts}/${job.maxAttempts}` +
  (job.claimedBy === null || job.status !== "claimed" ? "" : `  by ${job.claimedBy} until ${instant(job.leaseUntil)}`) +
  (job.status === "queued" ? `  from ${instant(job.availableAt)}` : "") +
  (job.lastError === null ? "" : `  last error: ${brief(job.lastError, 160)}`)

const get = Command.make(
  "get",
  {
    runId: runIdArg,
    events: Options.boolean("events").pipe(Options.withDescription("also print the run's event log")),
    store: storeOption,
    json: jsonOption
  },
  (options) =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const queue = yield* WorkQueue
      const run = yield* store.get(options.runId)
      const checkpoint = yield* store.latestCheckpoint(run.runId)
      const jobs = yield* queue.jobsOf(run.runId)
      const events = options.events ? yield* store.events(run.runId, 0) : undefined
      const interrupts = interruptsOf(run, checkpoint)
      const state = Option.match(checkpoint, { onNone: () => null, onSome: (c) => c.state })
      if (options.json) {
        return yield* printJson({ run, state, interrupts, jobs, ...(events === undefined ? {} : { events }) })
      }
      const pairs: Array<readonly [string, string]> = [
        ["run", run.runId],
        ["graph", `${run.graphId}@${run.graphVersion} (${run.graphHash.slice(0, 12)})`],
        ["tenant", run.tenant],
        ["status", run.status],
        ["step", String(run.step)],
        ["created", instant(run.createdAt)],
        ["updated", instant(run.updatedAt)],
        ["usage", spending(run.usage)]
      ]
      if (run.error !== null) pairs.push(["error", `${run.error.tag}: ${run.error.message}`])
      if (run.waitUntil !== null) pairs.push(["wait until", instant(run.waitUntil)])
      if (run.config.deadline !== null) pairs.push(["deadline", instant(run.config.deadline)])
      if (run.parentRunId !== null) pairs.push(["parent", run.parentRunId])
      if (run.forkedFrom !== null) pairs.push(["forked from", `${run.forkedFrom.runId} at ${run.forkedFrom.seq}`])
      for (const i of interrupts) {
        pairs.push(["waiting on", `${i.node}${i.index > 0 ? `[${i.index}]` : ""} (${i.kind}): ${brief(i.payload, 160)}`])
      }
      for (const job of jobs) pairs.push(["job", jobLine(job)])
      const lines = [fields(pairs), "state", JSON.stringify(state, null, 2).replace(/^/gm, "  ")]
      if (events !== undefined) {
        lines.push("events")
        for (const { _tag, at, runId: _runId, seq, step, ...rest } of events) {
          lines.push(`  ${String(seq).padStart(4)}  step ${String(step).padEnd(4)} ${instant(at)}  ${_tag}  ${brief(rest, 160)}`)
        }
      }
      yield* Console.log(lines.join("\n"))
    }).pipe(Effect.provide(runtimeLayer(options.store, "check")))
).pipe(Command.withDescription("show a run: status, step, usage, error, what it waits on, its jobs and latest state"))

const cancel = Command.make(
  "cancel",
  {
    runId: runIdArg,
    reason: Options.text("reason").pipe(
      Options.withPseudoName("TEXT"),
      Options.withDescription("recorded in the RunCancelled event"),
      Options.withDefault("cancelled from the command line")
    ),
    store: storeOption,
    json: jsonOption
  },
  (options) =>
    Effect.gen(function*() {
      const runner = yield* Runner
      yield* runner.cancel(options.runId, options.reason)
      yield* options.json
        ? printJson({ runId: options.runId, status: "cancelled" })
        : Console.log(`run ${options.runId} cancelled`)
    }).pipe(Effect.provide(runtimeLayer(options.store, "check")))
).pipe(Command.withDescription("cancel a run that has not ended; a worker running it stops at its next write"))

const resume = Command.make(
  "resume",
  { runId: runIdArg, store: storeOption, json: jsonOption },
  (options) =>
    Effect.gen(function*() {
      const store = yield* RunStore
      const queue = yield* WorkQueue
      const run = yield* store.get(options.runId)
      const runId = run.runId
      if (terminalStatuses.has(run.status)) {
        return yield* new RunStatusError({ runId, status: run.status, expected: "not yet ended" })
      }
      const live = (yield* queue.jobsOf(runId)).find((job) => job.status === "queued" || job.status === "claimed")
      if (live !== undefined) {
        return yield* options.json
          ? printJson({ runId, jobId: live.jobId, jobStatus: live.status, queued: false })
          : Console.log(`run ${runId} already has a ${live.status} job (${live.jobId}); nothing to do`)
      }
      const now = yield* Clock.currentTimeMillis
      let availableAt: number | undefined
      if (run.status === "waiting") {
        const due = Math.min(run.waitUntil ?? Number.POSITIVE_INFINITY, run.config.deadline ?? Number.POSITIVE_INFINITY)
        if (!Number.isFinite(due)) {
          return yield* new RunStatusError({
            runId,
            status: run.status,
            expected: "pending or running (a waiting run continues when it is answered: use runs approve or reject)"
          })
        }
        availableAt = due
      }
      const job = yield* queue.enqueue(runId, { now, ...(availableAt === undefined ? {} : { availableAt }) })
      yield* options.json
        ? printJson({ runId, jobId: job.jobId, jobStatus: job.status, availableAt: job.availableAt, queued: true })
        : Console.log(
          `run ${runId} queued (${job.jobId})${availableAt === undefined ? "" : ` for ${instant(availableAt)}`}`
        )
    }).pipe(Effect.provide(runtimeLayer(options.store, "check")))
).pipe(
  Command.withDescription(
    "queue a run again whose job died or was dead-lettered (a waiting run with a timeout: its timer)"
  )
)

/** Answers a waiting run through `Worker.respond` and says what became of it. */
const answer = (
  verb: "approved" | "rejected",
  options: {
    readonly runId: string
    readonly node: Option.Option<string>
    readonly graphs: Option.Option<string>
    readonly store: Option.Option<string>
    readonly json: boolean
  },
  response: HumanResponse
) =>
  Effect.gen(function*() {
    const store = yield* RunStore
    const run = yield* store.get(options.runId)
    if (run.status !== "waiting") {
      return yield* new RunStatusError({ runId: run.runId, status: run.status, expected: "waiting" })
    }
    const module = yield* GraphModule.required(options.graphs)
    const graph = yield* findGraph(module, run.graphId, Option.some(run.graphVersion))
    const target = Option.match(options.node, { onNone: () => undefined, onSome: (node) => ({ node }) })
    const status = yield* (Worker.respond(graph, run.runId, response, target) as Effect.Effect<
      RunStatus,
      Effect.Effect.Error<ReturnType<typeof Worker.respond>>,
      Runner | WorkQueue
    >)
    if (options.json) return yield* printJson({ runId: run.runId, response: response._tag, status })
    yield* Console.log(
      status === "running"
        ? `run ${run.runId} ${verb}; queued for a worker`
        : status === "waiting"
        ? `run ${run.runId} ${verb}; it still waits on other interrupts`
        : `run ${run.runId} ${verb}; it is now ${status}`
    )
  }).pipe(Effect.provide(runtimeLayer(options.store, "check")))

const approve = Command.make(
  "approve",
  {
    runId: runIdArg,
    value: Options.text("value").pipe(
      Options.withPseudoName("JSON"),
      Options.withDescription("a JSON value handed to the node with the approval"),
      Options.mapEffect(parseJson("value")),
      Options.optional
    ),
    node: nodeOption,
    graphs: graphsOption,
    store: storeOption,
    json: jsonOption
  },
  (options) =>
    answer(
      "approved",
      options,
      Option.match(options.value, {
        onNone: () => ({ _tag: "approve" as const }),
        onSome: (value) => ({ _tag: "approve" as const, value })
      })
    )
).pipe(Command.withDescription("approve a waiting run and queue it for a worker"))

const reject = Command.make(
  "reject",
  {
    runId: runIdArg,
    reason: Options.text("reason").pipe(Options.withPseudoName("TEXT"), Options.withDescription("why, handed to the node"), Options.optional),
    node: nodeOption,
    graphs: graphsOption,
    store: storeOption,
    json: jsonOption
  },
  (options) =>
    answer(
      "rejected",
      options,
      Option.match(options.reason, {
        onNone: () => ({ _tag: "reject" as const }),
        onSome: (reason) => ({ _tag: "reject" as const, reason })
      })
    )
).pipe(Command.withDescription("reject a waiting run and queue it for a worker (a rejected breakpoint cancels it)"))

/** The `runs` command and its subcommands. */
export const command = Command.make("runs").pipe(
  Command.withDescription("inspect and steer stored runs"),
  Command.withSubcommands([list, get, cancel, resume, approve, reject])
)

