/**
 * Nodes: what a node receives (its context), what it may return (an update or a command), and
 * the policy the runtime applies around it (timeout, retries, circuit breaker, budget).
 */
import { Clock, Duration, Effect, Schedule, Schema } from "effect"
import type { BudgetExceededError } from "./Errors.js"

/** A human's answer to an interrupt (or a breakpoint); `timeout` is what an expired wait receives. */
export const HumanResponse = Schema.Union(
  Schema.TaggedStruct("approve", { value: Schema.optional(Schema.Unknown) }),
  Schema.TaggedStruct("reject", { reason: Schema.optional(Schema.String) }),
  Schema.TaggedStruct("edit", { update: Schema.Record({ key: Schema.String, value: Schema.Unknown }) }),
  Schema.TaggedStruct("timeout", {})
)
/** A human's answer to an interrupt (or a breakpoint). */
export type HumanResponse = typeof HumanResponse.Type

/**
 * The signal a node fails with when it asks for a human: the runtime catches it, parks the
 * run as `waiting`, and re-runs the node with the response when one arrives.
 */
export class NodeInterrupt {
  readonly _tag = "NodeInterrupt"
  constructor(readonly payload: unknown, readonly timeoutMillis: number | undefined) {}
}

/** What a node may spend, reported after a model call or reserved before one. */
export interface Spending {
  readonly tokens?: number
  readonly usd?: number
}

/** A model call's usage, recorded into the run's budget (and emitted as a `ModelCalled` event). */
export interface ModelUsage {
  readonly model: string
  readonly inputTokens: number
  readonly outputTokens: number
  readonly usd: number
  /** The call's index among the node instance's calls (agent nodes). */
  readonly call?: number
  readonly latencyMs?: number
  readonly finishReason?: string
  /** The call was answered from the call journal: its usage counts once, it was not paid again. */
  readonly replayed?: boolean
}

/** The view a node has of its run. */
export interface NodeContext<S, I = undefined> {
  /** The state snapshot of this step (only the declared `reads`, when declared). */
  readonly state: S
  /** The fan-out item this instance handles (undefined for a plain node). */
  readonly input: I
  readonly runId: string
  readonly graphId: string
  readonly node: string
  /** The fan-out index (0 for a plain node). */
  readonly index: number
  readonly step: number
  /** 1 on the first attempt, then 2, 3, … on retries. */
  readonly attempt: number
  /** The same on every attempt of this node instance in this step: hand it to side effects. */
  readonly idempotencyKey: string
  /** Records a custom event in the run's event log. */
  readonly emit: (name: string, data?: unknown) => Effect.Effect<void>
  /**
   * Asks a human: the first time, the run parks as `waiting` with `payload`; when a response
   * arrives the node runs again and this returns it. An expired `timeout` returns `{ _tag: "timeout" }`.
   */
  readonly interrupt: (
    payload: unknown,
    options?: { readonly timeout?: Duration.DurationInput }
  ) => Effect.Effect<HumanResponse, NodeInterrupt>
  /** Reserves spending before a model call; fails when the run's or the node's budget cannot cover it. */
  readonly reserve: (estimate: Spending) => Effect.Effect<void, BudgetExceededError>
  /** Records a model call's actual usage against the budgets and releases the reservation. */
  readonly recordUsage: (usage: ModelUsage) => Effect.Effect<void>
}

const CommandTypeId: unique symbol = Symbol.for("fibergraph/Command")

/** One fan-out instance: run `node` with `input`. */
export interface Send {
  readonly node: string
  readonly input: unknown
}

/** A node's explicit routing: an update plus where to go next, overriding the node's edges. */
export interface Command<U> {
  readonly [CommandTypeId]: typeof CommandTypeId
  readonly update: U | undefined
  readonly goto: ReadonlyArray<string>
  readonly send: ReadonlyArray<Send>
}

/** Whether a node's result is a command. */
export const isCommand = (u: unknown): u is Command<unknown> =>
  typeof u === "object" && u !== null && CommandTypeId in u

/** Go to `targets` next (declare them in the node's `goto`), applying `update`. */
export const goto = <U = never>(targets: string | ReadonlyArray<string>, update?: U): Command<U> => ({
  [CommandTypeId]: CommandTypeId,
  update,
  goto: typeof targets === "string" ? [targets] : targets,
  send: []
})

/** Run one instance of a node per item next (declare the node in `goto`), applying `update`. */
export const send = <U = never>(sends: ReadonlyArray<Send>, update?: U): Command<U> => ({
  [CommandTypeId]: CommandTypeId,
  update,
  goto: [],
  send: sends
})

/** What a node returns: a partial update of the keys it writes, or a command. */
export type NodeResult<U> = U | Command<U>

/** Retries with exponential backoff, jitter and a cap. */
export interface RetryPolicy {
  /** Attempts in all, including the first (default 3). */
  readonly maxAttempts?: number
  readonly initialDelay?: Duration.DurationInput
  readonly maxDelay?: Duration.DurationInput
  readonly factor?: number
  /** Full jitter on each delay (default true). */
  readonly jitter?: boolean
}

/** A circuit breaker shared by every run of the process for this graph and node. */
export interface BreakerPolicy {
  /** Consecutive failures that open the circuit (default 5). */
  readonly failureThreshold?: number
  /** How long the circuit stays open before one probe is let through (default 30 s). */
  readonly resetAfter?: Duration.DurationInput
}

/** The policy applied around each attempt of a node. */
export interface NodePolicy {
  readonly timeout?: Duration.DurationInput
  readonly retry?: RetryPolicy
  /**
   * Which failures are worth another attempt. A throw in the node's code reaches it as a
   * `NodeDefectError` (the thrown value in `defect`). By default every failure and every throw is
   * retried except the ones the runtime marks final: `StateValidationError`, `WritePermissionError`,
   * `RoutingError`, `BudgetExceededError`, `UserCodeError`, `StaleClaimError`, the agent errors, and HTTP
   * responses another attempt cannot fix (400, 401, 403, 404, 422). Waiting for a human and interrupts are never retried.
   */
  readonly retryOn?: (error: unknown) => boolean
  readonly breaker?: BreakerPolicy
}

/**
 * How long a failure asks to wait before it is tried again (ms): its `retryAfterMillis`, or the
 * `Retry-After` header (seconds or an HTTP date) of an `@effect/ai` `HttpResponseError` (429, 503).
 */
export const retryAfterOf = (error: unknown, now: number): number | undefined => {
  if (typeof error !== "object" || error === null) return undefined
  if ("retryAfterMillis" in error && typeof error.retryAfterMillis === "number") return error.retryAfterMillis
  const response = "_tag" in error && error._tag === "HttpResponseError" && "response" in error
    ? error.response as { readonly status?: number; readonly headers?: Record<string, string> }
    : undefined
  const header = response?.headers?.["retry-after"]
  if (header === undefined) return undefined
  const seconds = Number(header)
  if (header.trim() !== "" && Number.isFinite(seconds)) return Math.max(0, seconds * 1000)
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

/** Whether a failure is an HTTP response that another attempt cannot fix (400, 401, 403, 404, 422). */
export const isPermanentHttpFailure = (error: unknown): boolean =>
  typeof error === "object" && error !== null && "_tag" in error && error._tag === "HttpResponseError" &&
  "response" in error && [400, 401, 403, 404, 422].includes((error.response as { readonly status: number }).status)

/**
 * The retry schedule of a policy: exponential, optionally jittered, capped, bounded; a failure that
 * says how long to wait (`Retry-After`) waits at least that long.
 */
export const retrySchedule = (policy: RetryPolicy): Schedule.Schedule<unknown, unknown> => {
  const cap = Duration.toMillis(policy.maxDelay ?? "10 seconds")
  const base = Schedule.exponential(policy.initialDelay ?? "100 millis", policy.factor ?? 2).pipe(
    Schedule.modifyDelay((d) => Duration.millis(Math.min(Duration.toMillis(d), cap)))
  )
  const shaped = policy.jitter === false ? base : Schedule.jitteredWith(base, { min: 0, max: 1 })
  const askedFor = Schedule.identity<unknown>().pipe(
    Schedule.addDelayEffect((error) =>
      Effect.map(Clock.currentTimeMillis, (now) => Duration.millis(retryAfterOf(error, now) ?? 0))
    )
  )
  return Schedule.intersect(
    Schedule.intersect(shaped, askedFor),
    Schedule.recurs(Math.max(0, (policy.maxAttempts ?? 3) - 1))
  )
}

/** The decision an approval node records. */
export type Decision = "approved" | "rejected" | "edited" | "timed_out"

/**
 * A built-in approval step: parks the run with `payload(state)` until a human answers (or the
 * optional `timeout` passes) and records the decision under `key` for a conditional edge to read.
 * An `edit` response's state updates are applied before the decision is recorded.
 */
export const approval = <S, K extends string>(options: {
  readonly key: K
  readonly payload: (state: S) => unknown
  readonly timeout?: Duration.DurationInput
}) =>
(ctx: NodeContext<S, unknown>): Effect.Effect<{ readonly [P in K]: Decision }, NodeInterrupt> =>
  ctx.interrupt(options.payload(ctx.state), options.timeout === undefined ? undefined : { timeout: options.timeout }).pipe(
    Effect.map((response) => {
      const decision: Decision = response._tag === "approve"
        ? "approved"
        : response._tag === "reject"
        ? "rejected"
        : response._tag === "edit"
        ? "edited"
        : "timed_out"
      return { [options.key]: decision } as { readonly [P in K]: Decision }
    })
  )
