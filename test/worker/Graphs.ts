/**
 * The graphs of the worker tests, and the `Probe` their nodes report to: how often each node ran
 * (per run and step), how many `slow` nodes were in flight at once, which node executions were
 * interrupted, in which order (and when) runs finished, and what the workers logged.
 *
 * The nodes need the `Probe`; the `GraphRegistry` of a test captures the test's own `Probe` when it
 * is built, as a worker's registry captures the services of its graphs.
 */
import { Clock, Context, Duration, Effect, Layer, Schema } from "effect"
import * as Graph from "../../src/Graph.js"
import * as GraphRegistry from "../../src/services/GraphRegistry.js"
import * as State from "../../src/State.js"

/** One line a worker logged. */
export interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

/** What the nodes of one test saw. */
export interface ProbeState {
  /** Executions per `runId node step`. */
  readonly executions: Map<string, number>
  inflight: number
  maxInflight: number
  /** Runs in the order their last node ran, with their tag and the (clock) time. */
  readonly finished: Array<{ readonly runId: string; readonly tag: string; readonly at: number }>
  /** `runId node` of every node execution that was interrupted. */
  readonly interrupted: Array<string>
  readonly logs: Array<LogLine>
}

/** The probe of one test. */
export class Probe extends Context.Tag("test/worker/Probe")<Probe, ProbeState>() {}

/** A fresh probe. */
export const probeLayer: Layer.Layer<Probe> = Layer.sync(Probe, () => ({
  executions: new Map(),
  inflight: 0,
  maxInflight: 0,
  finished: [],
  interrupted: [],
  logs: []
}))

/** How often `node` of `runId` ran, over all steps. */
export const executionsOf = (probe: ProbeState, runId: string, node: string) => {
  let total = 0
  for (const [key, count] of probe.executions) if (key.startsWith(`${runId} ${node} `)) total += count
  return total
}

/** How often each step of `node` of `runId` ran. */
export const executionsByStep = (probe: ProbeState, runId: string, node: string) =>
  [...probe.executions].filter(([key]) => key.startsWith(`${runId} ${node} `)).map(([key, count]) => ({ key, count }))

/** Counts an execution of the current node; returns how often this node of this run has run (over all steps). */
const record = (ctx: { readonly runId: string; readonly node: string; readonly step: number }) =>
  Effect.map(Probe, (probe) => {
    const key = `${ctx.runId} ${ctx.node} ${ctx.step}`
    probe.executions.set(key, (probe.executions.get(key) ?? 0) + 1)
    return executionsOf(probe, ctx.runId, ctx.node)
  })

const finish = (ctx: { readonly runId: string }, tag: string) =>
  Effect.flatMap(Effect.all([Probe, Clock.currentTimeMillis]), ([probe, at]) =>
    Effect.sync(() => probe.finished.push({ runId: ctx.runId, tag, at })))

/** The state of `work`: a tag to recognise the run by, and how long the first execution of `slow` takes. */
export const WorkState = State.define({
  tag: State.channel(Schema.String, { initial: () => "" }),
  hold: State.channel(Schema.Number, { initial: () => 0 }),
  log: State.list(Schema.String)
})

/**
 * `a` → `slow` → `c`, one step each. The first execution of `slow` in a run sleeps `hold` ms (later
 * ones return at once) and counts itself in flight while it does; an interruption is recorded.
 */
export const work = Effect.runSync(
  Graph.make({ id: "work", state: WorkState })
    .node("a", { writes: ["log"] }, (ctx) => Effect.as(record(ctx), { log: ["a"] }))
    .node("slow", { writes: ["log"] }, (ctx) =>
      Effect.gen(function*() {
        const probe = yield* Probe
        const executions = yield* record(ctx)
        probe.inflight++
        probe.maxInflight = Math.max(probe.maxInflight, probe.inflight)
        yield* Effect.sleep(executions === 1 ? ctx.state.hold : 0).pipe(
          Effect.onInterrupt(() => Effect.sync(() => probe.interrupted.push(`${ctx.runId} slow`))),
          Effect.ensuring(Effect.sync(() => probe.inflight--))
        )
        return { log: ["slow"] }
      }))
    .node("c", { writes: ["log"] }, (ctx) =>
      Effect.gen(function*() {
        yield* record(ctx)
        yield* finish(ctx, ctx.state.tag)
        return { log: ["c"] }
      }))
    .edge(Graph.START, "a")
    .edge("a", "slow")
    .edge("slow", "c")
    .edge("c", Graph.END)
    .compile
)

/** The state of `ask`: how long the wait may last (0: no timeout) and the decision it got. */
export const AskState = State.define({
  waitMs: State.channel(Schema.Number, { initial: () => 0 }),
  decision: State.channel(Schema.String, { initial: () => "" }),
  log: State.list(Schema.String)
})

/** `ask` (waits for a human, with a timeout when `waitMs` > 0) → `after`. */
export const ask = Effect.runSync(
  Graph.make({ id: "ask", state: AskState })
    .node("ask", { writes: ["decision"] }, (ctx) =>
      Effect.gen(function*() {
        yield* record(ctx)
        const response = yield* ctx.interrupt(
          { question: "go on?" },
          ctx.state.waitMs > 0 ? { timeout: Duration.millis(ctx.state.waitMs) } : undefined
        )
        return { decision: response._tag }
      }))
    .node("after", { writes: ["log"] }, (ctx) =>
      Effect.gen(function*() {
        yield* record(ctx)
        yield* finish(ctx, "after")
        return { log: ["after"] }
      }))
    .edge(Graph.START, "ask")
    .edge("ask", "after")
    .edge("after", Graph.END)
    .compile
)

const Plain = State.define({ log: State.list(Schema.String) })

/** A graph whose only node dies. */
export const broken = Effect.runSync(
  Graph.make({ id: "broken", state: Plain })
    .node("boom", {}, (ctx) => Effect.zipRight(record(ctx), Effect.die(new Error("boom in node"))))
    .edge(Graph.START, "boom")
    .edge("boom", Graph.END)
    .compile
)

/** A graph no worker registers. */
export const ghost = Effect.runSync(
  Graph.make({ id: "ghost", state: Plain })
    .node("a", {}, () => Effect.succeed({ log: ["a"] }))
    .edge(Graph.START, "a")
    .edge("a", Graph.END)
    .compile
)

/** `drift` version 1 as runs are submitted with it: `a` → `b`. */
export const driftSubmitted = Effect.runSync(
  Graph.make({ id: "drift", state: Plain })
    .node("a", {}, () => Effect.succeed({ log: ["a"] }))
    .node("b", {}, () => Effect.succeed({ log: ["b"] }))
    .edge(Graph.START, "a")
    .edge("a", "b")
    .edge("b", Graph.END)
    .compile
)

/** `drift` version 1 as the workers register it: the same id and version, another definition (hash). */
export const driftRegistered = Effect.runSync(
  Graph.make({ id: "drift", state: Plain })
    .node("a", {}, () => Effect.succeed({ log: ["a"] }))
    .edge(Graph.START, "a")
    .edge("a", Graph.END)
    .compile
)

/** The registry the workers of the tests use (everything but `ghost`, and `drift` as registered). */
export const registryLayer = GraphRegistry.layer([work, ask, broken, driftRegistered])
