/**
 * One node instance of a step, attempt by attempt: each attempt runs under the node's timeout
 * and circuit breaker (in its own span when traced); failures the policy deems transient are retried with
 * `Effect.retry` on the node's backoff schedule; the last attempt's result is settled into an
 * update (validated against the node's writes and the state schema), an interrupt, or a failure.
 * A throw (a defect) is retried like a failure, seen by `retryOn` as a `NodeDefectError`; an
 * interrupt of the fiber is never retried.
 */
import { Cause, Chunk, Context, Duration, Effect, Option } from "effect"
import {
  NodeDefectError,
  NodeFailedError,
  NodeTimeoutError,
  StateValidationError,
  WritePermissionError
} from "../Errors.js"
import type { CompiledGraph, CompiledNode } from "../Graph.js"
import { type HumanResponse, isCommand, isPermanentHttpFailure, NodeInterrupt, retrySchedule } from "../Node.js"
import { AttemptContext, type InstanceScope, project } from "./NodeContext.js"
import type { Draft, Entry, Env, FailureInfo, Position, Stamp } from "./Position.js"
import { checkCommand } from "./Routing.js"

/** The attempt of the node instance running now: 1 on the first attempt, then 2, 3, … on retries. */
export class CurrentAttempt extends Context.Reference<CurrentAttempt>()("fibergraph/CurrentAttempt", {
  defaultValue: () => 1
}) {}

/** How a node instance ended: an update (and its command's routing), an interrupt, or a failure. */
export type InstanceResult =
  | {
    readonly _tag: "Done"
    readonly entry: Entry
    readonly events: Array<Draft>
    readonly update: Record<string, unknown>
    readonly goto: ReadonlyArray<string> | undefined
    readonly sends: ReadonlyArray<{ readonly node: string; readonly input: unknown }>
  }
  | {
    readonly _tag: "Interrupted"
    readonly entry: Entry
    readonly events: Array<Draft>
    readonly payload: unknown
    readonly timeoutMillis: number | undefined
    readonly resumes: ReadonlyArray<HumanResponse>
  }
  | { readonly _tag: "Failed"; readonly entry: Entry; readonly events: Array<Draft>; readonly error: FailureInfo }

const finalTags = new Set([
  "StateValidationError",
  "WritePermissionError",
  "RoutingError",
  "BudgetExceededError",
  "UserCodeError",
  "StaleClaimError",
  "JournalDivergenceError",
  "AgentMaxIterationsError",
  "AgentOutputError",
  "ModelAuthError",
  "ModelRequestError",
  "ProviderConfigError"
])

/** Whether a failure is worth another attempt when the policy has no `retryOn`: any the runtime does not mark final. */
export const defaultRetryable = (error: unknown) =>
  !(typeof error === "object" && error !== null && "_tag" in error && finalTags.has(String(error._tag))) &&
  !isPermanentHttpFailure(error)

const describeDefect = (defect: unknown): string => {
  const { message, tag } = describe(defect)
  return message === tag ? tag : `${tag}: ${message}`
}

/** A failure's tag and message, as events and failed runs record them. */
export const describe = (error: unknown): { tag: string; message: string } => {
  if (typeof error === "object" && error !== null) {
    const tag = "_tag" in error ? String(error._tag) : error instanceof Error ? error.name : "Error"
    const message = error instanceof Error || "message" in error ? String((error as { message: unknown }).message) : JSON.stringify(error)
    return { tag, message: message === "" ? tag : message }
  }
  return { tag: "Error", message: String(error) }
}

/** Checks a node's update against its declared writes and the state schema. */
export const validateUpdate = (
  graph: CompiledGraph,
  node: CompiledNode,
  update: unknown
): Record<string, unknown> | StateValidationError | WritePermissionError => {
  if (update === undefined || update === null) return {}
  if (typeof update !== "object" || Array.isArray(update)) {
    return new StateValidationError({
      graphId: graph.id,
      node: node.name,
      key: "<update>",
      detail: `a node must return an object of state keys (or a command), got ${Array.isArray(update) ? "an array" : typeof update}`
    })
  }
  const record = update as Record<string, unknown>
  for (const key in record) {
    const validate = graph.state.validators[key]
    if (validate === undefined || (node.writes !== undefined && !node.writes.has(key))) {
      return new WritePermissionError({
        graphId: graph.id,
        node: node.name,
        key,
        allowed: node.writes === undefined ? graph.state.keys : [...node.writes]
      })
    }
    const value = record[key]
    if (value === undefined) continue
    const problem = validate(value)
    if (problem !== undefined) return new StateValidationError({ graphId: graph.id, node: node.name, key, detail: problem })
  }
  return record
}

/**
 * Runs `effect` with `attempt` as the `CurrentAttempt`. Providing a service copies the fiber's
 * context (about a sixth of a bare step's time), so it is skipped when the enclosing value is
 * already right: every first attempt outside a retried node.
 */
const withAttempt = <A, E, R>(effect: Effect.Effect<A, E, R>, attempt: number): Effect.Effect<A, E, R> =>
  Effect.flatMap(CurrentAttempt, (outer) => outer === attempt ? effect : Effect.provideService(effect, CurrentAttempt, attempt))

/** A failure that ends the attempts: not retried, settled as it is. */
class Final {
  constructor(readonly error: unknown) {}
}

/**
 * Runs one node instance of the step at `pos`, retrying its attempts as its policy says; with
 * `traced`, each attempt runs in a `fibergraph.node` span.
 */
export const runInstance = (
  env: Env,
  pos: Position,
  entry: Entry,
  stamp: Stamp,
  traced: boolean
): Effect.Effect<InstanceResult, never, unknown> => {
  const graph = env.graph
  const node = graph.nodes.get(entry.node)!
  const name = env.prefix + entry.node
  const events: Array<Draft> = [stamp({ _tag: "NodeStarted", node: name, index: entry.index })]
  const waiting = pos.interrupts.find((i) => i.kind === "node" && i.node === entry.node && i.index === entry.index)
  const resumes = waiting?.resumes ?? []
  const policy = node.policy
  const timeoutMillis = policy.timeout === undefined ? undefined : Duration.toMillis(policy.timeout)

  const scope: InstanceScope = {
    env,
    entry,
    name,
    step: pos.step,
    snapshot: project(pos.state, node.reads),
    idempotencyKey: `${env.runId}/${env.scope}${pos.step}/${name}/${entry.index}`,
    stamp,
    events,
    nextResume: env.resumeSource ?? (() => resumes[scope.interruptCalls++]),
    interruptCalls: 0
  }
  let attempt = 0
  let current: AttemptContext | undefined

  const attemptOnce = (): Effect.Effect<unknown, unknown, unknown> => {
    const n = ++attempt
    scope.interruptCalls = 0
    current = new AttemptContext(scope, n)
    let eff = node.run(current)
    if (timeoutMillis !== undefined) {
      eff = Effect.timeoutFail(eff, {
        duration: timeoutMillis,
        onTimeout: () => new NodeTimeoutError({ node: name, attempt: n, timeoutMillis })
      })
    }
    if (policy.breaker !== undefined) eff = env.breakers.protect(`${graph.id}/${entry.node}`, policy.breaker, eff)
    if (traced) {
      eff = Effect.withSpan(eff, "fibergraph.node", {
        attributes: {
          "fibergraph.graph_id": graph.id,
          "fibergraph.run_id": env.runId,
          "fibergraph.node": name,
          "fibergraph.index": entry.index,
          "fibergraph.attempt": n,
          "fibergraph.step": pos.step
        },
        captureStackTrace: false
      })
    }
    return withAttempt(eff, n)
  }

  const failed = (error: unknown): InstanceResult => {
    const { message, tag } = describe(error)
    events.push(stamp({ _tag: "NodeFailed", node: name, index: entry.index, attempts: attempt, error: message, errorTag: tag }))
    const final = new NodeFailedError({
      runId: env.runId,
      node: name,
      index: entry.index,
      attempt,
      errorTag: tag,
      detail: message
    })
    return { _tag: "Failed", entry, events, error: { tag, message: final.message, error } }
  }

  const failedWith = (error: unknown): InstanceResult => {
    if (!(error instanceof NodeInterrupt)) return failed(error)
    events.push(stamp({ _tag: "NodeInterrupted", node: name, index: entry.index, kind: "node", payload: error.payload }))
    return { _tag: "Interrupted", entry, events, payload: error.payload, timeoutMillis: error.timeoutMillis, resumes }
  }

  const settle = (value: unknown): InstanceResult => {
    current?.releaseReservation()
    if (value instanceof Final) return failedWith(value.error)
    let update: unknown = value
    let gotoTargets: ReadonlyArray<string> | undefined
    let sends: ReadonlyArray<{ node: string; input: unknown }> = []
    if (isCommand(value)) {
      const misrouted = checkCommand(graph, node, name, value)
      if (misrouted !== undefined) return failed(misrouted)
      update = value.update
      gotoTargets = value.goto
      sends = value.send
    }
    const checked = validateUpdate(graph, node, update)
    if (checked instanceof StateValidationError || checked instanceof WritePermissionError) return failed(checked)
    events.push(stamp({ _tag: "NodeCompleted", node: name, index: entry.index, attempts: attempt, keys: Object.keys(checked) }))
    return { _tag: "Done", entry, events, update: checked, goto: gotoTargets, sends }
  }

  const ended = (cause: Cause.Cause<unknown>): Effect.Effect<InstanceResult> => {
    current?.releaseReservation()
    if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure)) return Effect.succeed(failedWith(failure.value))
    const defect = Chunk.head(Cause.defects(cause))
    return Effect.succeed(failed(Option.getOrElse(defect, () => Cause.pretty(cause))))
  }

  const retry = policy.retry
  if (retry === undefined) {
    return Effect.matchCauseEffect(attemptOnce(), { onFailure: ended, onSuccess: (v) => Effect.succeed(settle(v)) })
  }
  const retryable = policy.retryOn ?? defaultRetryable
  const maxAttempts = retry.maxAttempts ?? 3
  const transient = (error: unknown, settled: unknown = error): Effect.Effect<Final, unknown> => {
    current?.releaseReservation()
    if (error instanceof NodeInterrupt || !retryable(error) || attempt >= maxAttempts) {
      return Effect.succeed(new Final(settled))
    }
    events.push(stamp({ _tag: "NodeRetrying", node: name, index: entry.index, attempt, error: describe(error).message }))
    return Effect.fail(error)
  }
  const retryingDefects = (cause: Cause.Cause<unknown>): Effect.Effect<Final, unknown> => {
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure)) return transient(failure.value)
    const defect = Chunk.head(Cause.defects(cause))
    if (Option.isNone(defect)) return Effect.failCause(cause)
    const wrapped = new NodeDefectError({
      node: name,
      attempt,
      detail: describeDefect(defect.value),
      defect: defect.value
    })
    return transient(wrapped, defect.value)
  }
  return Effect.suspend(attemptOnce).pipe(
    Effect.catchAllCause(retryingDefects),
    Effect.retry(retrySchedule(retry)),
    Effect.matchCauseEffect({ onFailure: ended, onSuccess: (v) => Effect.succeed(settle(v)) })
  )
}
