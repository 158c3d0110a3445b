/**
 * One superstep: run the frontier's node instances concurrently against one snapshot, merge
 * their validated updates in a deterministic order, and route; and `runToEnd`, the steps of a
 * graph run inside a node (a subgraph) until it ends. Nothing here touches the store:
 * `Drive.ts` commits what a step produces.
 */
import { Context, DefaultServices, Effect, Tracer } from "effect"
import { ConflictingUpdateError, RoutingError, StateValidationError, UserCodeError } from "../Errors.js"
import type { CompiledGraph } from "../Graph.js"
import type { NodeContext } from "../Node.js"
import * as State from "../State.js"
import { type InstanceResult, runInstance } from "./Attempt.js"
import { internalsOf } from "./NodeContext.js"
import {
  type Draft,
  type Entry,
  type Env,
  entryKey,
  initialPosition,
  nextPosition,
  type Position,
  type Stamp,
  type StepOutcome
} from "./Position.js"
import { byOrder, guarded, route, startFrontier } from "./Routing.js"

const nativeTracer = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/**
 * Runs one step from `pos`, producing its events and its outcome. The first instance that fails
 * for good (its last attempt) interrupts the others at once, and the step's outcome is that
 * failure alone, with only the failed instance's events. The step and each node
 * attempt get a span when a tracer is installed; under Effect's built-in tracer, which exports
 * nothing, they are skipped, since two spans cost about a quarter of a bare step's time.
 */
export const runStep = (
  env: Env,
  pos: Position,
  stamp: Stamp
): Effect.Effect<StepOutcome, never, unknown> =>
  Effect.tracerWith((tracer) => {
    const traced = tracer !== nativeTracer
    const step = stepOf(env, pos, stamp, traced)
    if (!traced) return step
    return Effect.withSpan(step, "fibergraph.step", {
      attributes: {
        "fibergraph.graph_id": env.graph.id,
        "fibergraph.run_id": env.runId,
        "fibergraph.step": pos.step
      },
      captureStackTrace: false
    })
  })

const stepOf = (
  env: Env,
  pos: Position,
  stamp: Stamp,
  traced: boolean
): Effect.Effect<StepOutcome, never, unknown> => {
  const graph = env.graph
  const todo = pos.pending.size === 0
    ? pos.frontier
    : pos.frontier.filter((e) => !pos.pending.has(entryKey(e.node, e.index)))
  if (todo.length === 1) {
    return Effect.map(runInstance(env, pos, todo[0]!, stamp, traced), (r) => finishStep(env, pos, [r]))
  }
  const limited = new Map<string, Effect.Semaphore>()
  for (const e of todo) {
    const n = graph.nodes.get(e.node)!
    if (n.concurrency !== undefined && !limited.has(e.node)) limited.set(e.node, Effect.unsafeMakeSemaphore(n.concurrency))
  }
  const run = (e: Entry) => {
    const eff = runInstance(env, pos, e, stamp, traced)
    const sem = limited.get(e.node)
    return Effect.flatMap(sem === undefined ? eff : sem.withPermits(1)(eff), (r) =>
      r._tag === "Failed" ? Effect.fail(r) : Effect.succeed(r))
  }
  return Effect.forEach(todo, run, { concurrency: env.config.concurrency }).pipe(
    Effect.map((results) => finishStep(env, pos, results)),
    Effect.catchAll((failed) => Effect.succeed(finishStep(env, pos, [failed])))
  )
}

/** Merges a step's instance results into its outcome: a failure, a wait, or the next state and frontier. */
export const finishStep = (
  env: Env,
  pos: Position,
  results: ReadonlyArray<InstanceResult>
): StepOutcome => {
  const graph = env.graph
  const events: Array<Draft> = []
  for (const r of results) for (const e of r.events) events.push(e)
  const failure = results.find((r) => r._tag === "Failed")
  if (failure !== undefined && failure._tag === "Failed") return { _tag: "Failed", events, error: failure.error }

  const done = new Map<string, Extract<InstanceResult, { _tag: "Done" }>>()
  for (const r of results) if (r._tag === "Done") done.set(entryKey(r.entry.node, r.entry.index), r)

  const interrupted = results.filter((r): r is Extract<InstanceResult, { _tag: "Interrupted" }> => r._tag === "Interrupted")
  if (interrupted.length > 0) {
    const pending = new Map(pos.pending)
    for (const [key, r] of done) pending.set(key, r.update)
    const timeouts = interrupted.map((r) => r.timeoutMillis).filter((t): t is number => t !== undefined)
    return {
      _tag: "Waiting",
      events,
      pending,
      interrupts: [...pos.interrupts.filter((i) => i.kind === "before"), ...interrupted.map((r) => ({
        kind: "node" as const,
        node: r.entry.node,
        index: r.entry.index,
        payload: r.payload,
        resumes: r.resumes,
        answered: false
      }))],
      waitMillis: timeouts.length === 0 ? undefined : Math.min(...timeouts)
    }
  }

  let state = pos.state
  const ordered = [...pos.frontier].sort(byOrder(graph))
  const writers = ordered.length > 1 ? new Map<string, Entry>() : undefined
  for (const e of ordered) {
    const key = entryKey(e.node, e.index)
    const update = done.get(key)?.update ?? pos.pending.get(key)
    if (update === undefined) continue
    const conflict = writers === undefined ? undefined : conflictOf(env, writers, e, update)
    if (conflict !== undefined) return failedWith(events, conflict)
    const reduced = guarded(env, e.node, "reducer", () => State.reduce(graph.state, state, update))
    if (reduced instanceof UserCodeError) return failedWith(events, reduced)
    state = reduced
  }

  const routed = route(env, state, ordered, (e) => {
    const r = done.get(entryKey(e.node, e.index))
    return r === undefined || r.goto === undefined ? undefined : { goto: r.goto, sends: r.sends }
  }, pos.barriers)
  if (routed instanceof RoutingError || routed instanceof StateValidationError || routed instanceof UserCodeError) {
    return failedWith(events, routed)
  }
  return {
    _tag: "Advanced",
    events,
    state,
    frontier: routed.frontier,
    barriers: routed.barriers,
    executed: [...new Set(ordered.map((e) => e.node))]
  }
}

/** Records `entry`'s writes of exclusive (last-value) keys; a key another instance of the step wrote is a conflict. */
const conflictOf = (
  env: Env,
  writers: Map<string, Entry>,
  entry: Entry,
  update: Record<string, unknown>
): ConflictingUpdateError | undefined => {
  const channels = env.graph.state.channels
  for (const key in update) {
    if (update[key] === undefined || !State.isExclusive(channels[key]!.reducer)) continue
    const first = writers.get(key)
    if (first !== undefined) {
      return new ConflictingUpdateError({ graphId: env.graph.id, key, nodes: [instanceName(env, first), instanceName(env, entry)] })
    }
    writers.set(key, entry)
  }
  return undefined
}

/** A node instance as an error names it: `prefix/node`, with `[index]` for a fan-out instance. */
const instanceName = (env: Env, entry: Entry): string =>
  `${env.prefix}${entry.node}${entry.input === undefined && entry.index === 0 ? "" : `[${entry.index}]`}`

const failedWith = (
  events: Array<Draft>,
  error: RoutingError | StateValidationError | UserCodeError | ConflictingUpdateError
): StepOutcome => ({ _tag: "Failed", events, error: { tag: error._tag, message: error.message, error } })

/** How a graph run inside a node ended. */
export type Ended =
  | { readonly _tag: "Completed"; readonly state: Record<string, unknown> }
  | { readonly _tag: "Failed"; readonly tag: string; readonly message: string }
  | { readonly _tag: "Waiting"; readonly payload: unknown; readonly waitMillis: number | undefined }
  | { readonly _tag: "MaxStepsExceeded"; readonly maxSteps: number }

/**
 * Runs `graph` from `state` to its end inside the node attempt `ctx`, step after step, with the
 * parent run's clock, breakers and budget; its events go into the parent step's log with node
 * names prefixed `parent/`, and its interrupts take the parent node's responses.
 */
export const runToEnd = (
  ctx: NodeContext<unknown, unknown>,
  graph: CompiledGraph,
  state: Record<string, unknown>
): Effect.Effect<Ended, never, unknown> =>
  Effect.suspend(() => {
    const internals = internalsOf(ctx)
    const parent = internals.env
    const env: Env = {
      ...parent,
      graph,
      config: { ...parent.config, interruptBefore: [], interruptAfter: [] },
      prefix: `${parent.prefix}${ctx.node}/`,
      scope: `${parent.scope}${internals.step}.${ctx.index}.`,
      resumeSource: internals.nextResume
    }
    const frontier = startFrontier(env, state)
    if (!Array.isArray(frontier)) {
      return Effect.succeed<Ended>({ _tag: "Failed", tag: frontier._tag, message: frontier.message })
    }
    const loop = (pos: Position): Effect.Effect<Ended, never, unknown> =>
      Effect.flatMap(runStep(env, pos, internals.stamp), (outcome): Effect.Effect<Ended, never, unknown> => {
        for (const e of outcome.events) internals.events.push(e)
        switch (outcome._tag) {
          case "Failed":
            return Effect.succeed({ _tag: "Failed", tag: outcome.error.tag, message: outcome.error.message })
          case "Waiting": {
            const first = outcome.interrupts.find((i) => i.kind === "node")
            return Effect.succeed({ _tag: "Waiting", payload: first?.payload, waitMillis: outcome.waitMillis })
          }
          case "Advanced": {
            if (outcome.frontier.length === 0) return Effect.succeed({ _tag: "Completed", state: outcome.state })
            if (pos.step + 1 >= env.config.maxSteps) {
              return Effect.succeed({ _tag: "MaxStepsExceeded", maxSteps: env.config.maxSteps })
            }
            return loop(nextPosition(pos, outcome))
          }
        }
      })
    return loop(initialPosition(state, frontier))
  })
