/**
 * Drives an owned run through its steps: each step's outcome becomes one fenced commit (events,
 * run row, checkpoint) and its events are published only once committed. Stops when the run
 * settles (waiting or terminal) or its claim turns out to be stale.
 */
import { Effect, Option } from "effect"
import { BudgetExceededError, DeadlineExceededError, MaxStepsExceededError } from "../Errors.js"
import type { RunEvent } from "../Events.js"
import type { Interrupt, RunRecord, RunStatus, RunStore } from "../services/RunStore.js"
import { toCheckpoint } from "./Codec.js"
import {
  type Draft,
  type Env,
  type FailureInfo,
  nextPosition,
  type Position,
  runStep,
  type Stamp,
  type StepOutcome
} from "./Step.js"

/** What a drive needs beyond the step environment. */
export interface Deps {
  readonly env: Env
  readonly store: RunStore["Type"]
  readonly epoch: number
  readonly publish: (events: ReadonlyArray<RunEvent>) => Effect.Effect<void>
  /** Told of every successful commit, before anything else can interrupt; `publish` follows, also uninterrupted. */
  readonly onCommit: (run: RunRecord, pos: Position | undefined) => void
}

/** A run that stopped moving: waiting for a response, or terminal. */
export interface Settled {
  readonly run: RunRecord
  readonly pos: Position
}

type CommitError = Effect.Effect.Error<ReturnType<RunStore["Type"]["commit"]>>

/** Builds the stamp of a step: drafts carry run id, step and time; sequences come at commit. */
export const stampFor = (env: Env, step: number): Stamp => (body) => {
  const draft = body as unknown as Draft & { runId: string; step: number; at: number }
  draft.runId = env.runId
  draft.seq = 0
  draft.step = step
  draft.at = env.clock.unsafeCurrentTimeMillis()
  return draft
}

/** Commits drafts (stamping sequences) with a new status and, optionally, a new position. */
export const commit = (
  deps: Deps,
  run: RunRecord,
  options: {
    readonly status: RunStatus
    readonly events: ReadonlyArray<Draft>
    readonly pos: Position | undefined
    readonly error?: FailureInfo | undefined
    readonly waitUntil?: number | null
  }
): Effect.Effect<RunRecord, CommitError> =>
  Effect.suspend(() => {
    const at = deps.env.clock.unsafeCurrentTimeMillis()
    let seq = run.lastSeq
    for (const e of options.events) e.seq = ++seq
    const events = options.events as unknown as ReadonlyArray<RunEvent>
    return deps.store.commit({
      runId: run.runId,
      epoch: deps.epoch,
      expectedStep: run.step,
      step: options.pos?.step ?? run.step,
      status: options.status,
      events,
      checkpoint: options.pos === undefined ? undefined : toCheckpoint(deps.env.graph, run.runId, options.pos, seq, at),
      usage: deps.env.spend.snapshot(),
      waitUntil: options.waitUntil ?? null,
      error: options.error === undefined ? null : { tag: options.error.tag, message: options.error.message },
      at
    }).pipe(
      Effect.onExit((exit) =>
        exit._tag === "Success"
          ? Effect.zipRight(Effect.sync(() => deps.onCommit(exit.value, options.pos)), deps.publish(events))
          : Effect.void
      )
    )
  })

const failureOf = (error: { readonly _tag: string; readonly message: string }): FailureInfo => ({
  tag: error._tag,
  message: error.message,
  error
})

const thresholds = [50, 75, 90, 100]

const budgetEvents = (
  env: Env,
  stamp: Stamp,
  before: RunRecord["usage"],
  after: RunRecord["usage"]
): { events: Array<Draft>; exceeded: BudgetExceededError | undefined } => {
  const events: Array<Draft> = []
  let exceeded: BudgetExceededError | undefined
  const check = (scope: string, resource: "tokens" | "usd", limit: number | null | undefined, from: number, to: number) => {
    if (limit === null || limit === undefined || limit <= 0 || to === from) return
    for (const percent of thresholds) {
      const mark = (limit * percent) / 100
      if (from < mark && to >= mark) {
        events.push(stamp({ _tag: "BudgetThreshold", scope, resource, percent, used: to, limit }))
      }
    }
    if (to >= limit && exceeded === undefined) {
      exceeded = new BudgetExceededError({ runId: env.runId, scope, resource, limit, requested: to })
    }
  }
  const budget = env.config.budget
  if (after === before) return { events, exceeded }
  check("run", "tokens", budget.tokens, before.total.tokens, after.total.tokens)
  check("run", "usd", budget.usd, before.total.usd, after.total.usd)
  for (const node of Object.keys(after.byNode)) {
    const limit = env.spend.nodeBudget(node)
    if (limit === undefined) continue
    const from = before.byNode[node] ?? { tokens: 0, usd: 0 }
    const to = after.byNode[node]!
    check(`node ${node}`, "tokens", limit.tokens, from.tokens, to.tokens)
    check(`node ${node}`, "usd", limit.usd, from.usd, to.usd)
  }
  return { events, exceeded }
}

const waitingEvent = (stamp: Stamp, interrupts: ReadonlyArray<Interrupt>, until: number | null) =>
  stamp({
    _tag: "RunWaiting",
    interrupts: interrupts.map(({ index, kind, node, payload }) => ({ kind, node, index, payload })),
    until
  })

/** Parks a position at static breakpoints: their interrupts, events, and the waiting status for `settle`. */
const breakpoint = (
  stamp: Stamp,
  events: Array<Draft>,
  pos: Position,
  kind: "before" | "after",
  nodes: ReadonlyArray<string>
): [Position, "waiting", Array<Draft>] => {
  const interrupts: Array<Interrupt> = nodes.map((node) => ({
    kind,
    node,
    index: 0,
    payload: { breakpoint: kind, node },
    resumes: [],
    answered: false
  }))
  for (const i of interrupts) {
    events.push(stamp({ _tag: "NodeInterrupted", node: i.node, index: 0, kind, payload: i.payload }))
  }
  events.push(waitingEvent(stamp, interrupts, null))
  return [{ ...pos, interrupts }, "waiting", events]
}

/** Runs steps from `pos` until the run waits, ends, or the claim is lost (a `StaleClaimError`). */
export const drive = (deps: Deps, start: RunRecord, startPos: Position): Effect.Effect<Settled, CommitError, unknown> => {
  const env = deps.env
  const config = env.config

  const step = (run: RunRecord, pos: Position): Effect.Effect<Settled, CommitError, unknown> =>
    Effect.suspend(() => {
      const stamp = stampFor(env, pos.step)
      const now = env.clock.unsafeCurrentTimeMillis()
      if (config.deadline !== null && now >= config.deadline) return timedOut(run, pos, stamp, [])
      if (pos.step >= config.maxSteps) {
        const error = new MaxStepsExceededError({ runId: env.runId, maxSteps: config.maxSteps })
        return settle(run, pos, "failed", [stamp({ _tag: "RunFailed", error: error.message, errorTag: error._tag })], failureOf(error))
      }
      const continuing = pos.pending.size > 0 || pos.interrupts.some((i) => i.kind !== "after")
      const events: Array<Draft> = continuing
        ? []
        : [stamp({ _tag: "StepStarted", nodes: pos.frontier.map((e) => e.node) })]

      if (config.interruptBefore.length > 0) {
        const answered = new Set(pos.interrupts.filter((i) => i.kind === "before" && i.answered).map((i) => i.node))
        const stops = [...new Set(pos.frontier.map((e) => e.node))].filter((n) =>
          config.interruptBefore.includes(n) && !answered.has(n)
        )
        if (stops.length > 0) return settle(run, ...breakpoint(stamp, events, pos, "before", stops))
      }

      const usageBefore = env.spend.snapshot()
      const remaining = config.deadline === null ? undefined : config.deadline - now
      const stepEffect = runStep(env, pos, stamp)
      if (remaining === undefined) {
        return Effect.flatMap(stepEffect, (outcome) => advance(run, pos, stamp, events, usageBefore, outcome))
      }
      return Effect.flatMap(Effect.timeoutOption(stepEffect, remaining), (result) =>
        Option.isNone(result)
          ? timedOut(run, pos, stamp, events)
          : advance(run, pos, stamp, events, usageBefore, result.value))
    })

  const advance = (
    run: RunRecord,
    pos: Position,
    stamp: Stamp,
    events: Array<Draft>,
    usageBefore: RunRecord["usage"],
    outcome: StepOutcome
  ): Effect.Effect<Settled, CommitError, unknown> => {
    for (const e of outcome.events) events.push(e)
    const budget = budgetEvents(env, stamp, usageBefore, env.spend.snapshot())
    for (const e of budget.events) events.push(e)
    switch (outcome._tag) {
      case "Failed": {
        events.push(stamp({ _tag: "RunFailed", error: outcome.error.message, errorTag: outcome.error.tag }))
        return settle(run, pos, "failed", events, outcome.error)
      }
      case "Waiting": {
        const until = outcome.waitMillis === undefined ? null : env.clock.unsafeCurrentTimeMillis() + outcome.waitMillis
        events.push(waitingEvent(stamp, outcome.interrupts, until))
        const next: Position = { ...pos, pending: outcome.pending, interrupts: outcome.interrupts }
        return settle(run, next, "waiting", events, undefined, until)
      }
      case "Advanced": {
        const next = nextPosition(pos, outcome)
        events.push(stamp({ _tag: "StepCommitted", next: outcome.frontier.map((e) => e.node) }))
        if (budget.exceeded !== undefined) {
          events.push(stamp({ _tag: "RunFailed", error: budget.exceeded.message, errorTag: budget.exceeded._tag }))
          return settle(run, next, "failed", events, failureOf(budget.exceeded))
        }
        if (outcome.frontier.length === 0) {
          events.push(stamp({ _tag: "RunCompleted" }))
          return settle(run, next, "completed", events)
        }
        const after = config.interruptAfter.length === 0
          ? []
          : outcome.executed.filter((n) => config.interruptAfter.includes(n))
        if (after.length > 0) return settle(run, ...breakpoint(stamp, events, next, "after", after))
        return Effect.flatMap(commit(deps, run, { status: "running", events, pos: next }), (r) => step(r, next))
      }
    }
  }

  const timedOut = (run: RunRecord, pos: Position, stamp: Stamp, events: Array<Draft>) => {
    const error = new DeadlineExceededError({ runId: env.runId, deadline: config.deadline ?? 0 })
    events.push(stamp({ _tag: "RunTimedOut", deadline: config.deadline ?? 0 }))
    return settle(run, pos, "timed_out", events, failureOf(error))
  }

  const settle = (
    run: RunRecord,
    pos: Position,
    status: RunStatus,
    events: Array<Draft>,
    error?: FailureInfo,
    waitUntil: number | null = null
  ): Effect.Effect<Settled, CommitError> =>
    Effect.map(
      commit(deps, run, { status, events, pos: status === "failed" || status === "timed_out" ? undefined : pos, error, waitUntil }),
      (r) => ({ run: r, pos })
    )

  return step(start, startPos)
}
