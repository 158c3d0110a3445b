/**
 * Drives an owned run through its steps: each step's outcome becomes one commit through the
 * writer (events, run row, checkpoint), and the drive returns where the run settled (waiting or
 * terminal). Before every step the writer's guard is checked, so a writer whose lease ran out
 * starts no node; a lost claim ends the drive with `StaleClaimError`.
 */
import { Effect, Option } from "effect"
import {
  DeadlineExceededError,
  MaxStepsExceededError,
  type RunStatusError,
  type StaleClaimError
} from "../Errors.js"
import type { Interrupt, RunRecord, RunStatus } from "../services/RunStore.js"
import { commit, failureOf, stampFor, type Writer } from "./Commit.js"
import { budgetEvents } from "./Budget.js"
import { type Draft, type Env, type FailureInfo, nextPosition, type Position, type Stamp, type StepOutcome } from "./Position.js"
import { runStep } from "./Step.js"

/** A run that stopped moving: waiting for a response, or terminal. */
export interface Settled {
  readonly run: RunRecord
  readonly pos: Position
}

/** Errors of a drive a caller can act on: a lost claim (or a run that ended under it). */
export type DriveError = StaleClaimError | RunStatusError

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

/** Runs steps from the writer's cursor until the run waits or ends, or the claim is lost. */
export const drive = (env: Env, writer: Writer): Effect.Effect<Settled, DriveError, unknown> => {
  const config = env.config

  const step = (pos: Position): Effect.Effect<Settled, DriveError, unknown> =>
    Effect.suspend(() => {
      const stamp = stampFor(writer, pos.step)
      const now = env.clock.unsafeCurrentTimeMillis()
      if (config.deadline !== null && now >= config.deadline) return timedOut(pos, stamp, [])
      if (pos.step >= config.maxSteps) {
        const error = new MaxStepsExceededError({ runId: env.runId, maxSteps: config.maxSteps })
        return settle(pos, "failed", [stamp({ _tag: "RunFailed", error: error.message, errorTag: error._tag })], failureOf(error))
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
        if (stops.length > 0) return settle(...breakpoint(stamp, events, pos, "before", stops))
      }

      const usageBefore = env.spend.snapshot()
      const remaining = config.deadline === null ? undefined : config.deadline - now
      const stepEffect = runStep(env, pos, stamp)
      const run = remaining === undefined
        ? Effect.flatMap(stepEffect, (outcome) => advance(pos, stamp, events, usageBefore, outcome))
        : Effect.flatMap(Effect.timeoutOption(stepEffect, remaining), (result) =>
          Option.isNone(result)
            ? timedOut(pos, stamp, events)
            : advance(pos, stamp, events, usageBefore, result.value))
      return Effect.zipRight(writer.guard, run)
    })

  const advance = (
    pos: Position,
    stamp: Stamp,
    events: Array<Draft>,
    usageBefore: RunRecord["usage"],
    outcome: StepOutcome
  ): Effect.Effect<Settled, DriveError, unknown> => {
    for (const e of outcome.events) events.push(e)
    const budget = budgetEvents(env.spend, stamp, usageBefore, env.spend.snapshot())
    for (const e of budget.events) events.push(e)
    switch (outcome._tag) {
      case "Failed": {
        events.push(stamp({ _tag: "RunFailed", error: outcome.error.message, errorTag: outcome.error.tag }))
        return settle(pos, "failed", events, outcome.error)
      }
      case "Waiting": {
        const until = outcome.waitMillis === undefined ? null : env.clock.unsafeCurrentTimeMillis() + outcome.waitMillis
        events.push(waitingEvent(stamp, outcome.interrupts, until))
        const next: Position = { ...pos, pending: outcome.pending, interrupts: outcome.interrupts }
        return settle(next, "waiting", events, undefined, until)
      }
      case "Advanced": {
        const next = nextPosition(pos, outcome)
        events.push(stamp({ _tag: "StepCommitted", next: outcome.frontier.map((e) => e.node) }))
        if (budget.exceeded !== undefined) {
          events.push(stamp({ _tag: "RunFailed", error: budget.exceeded.message, errorTag: budget.exceeded._tag }))
          return settle(next, "failed", events, failureOf(budget.exceeded))
        }
        if (outcome.frontier.length === 0) {
          events.push(stamp({ _tag: "RunCompleted" }))
          return settle(next, "completed", events)
        }
        const after = config.interruptAfter.length === 0
          ? []
          : outcome.executed.filter((n) => config.interruptAfter.includes(n))
        if (after.length > 0) return settle(...breakpoint(stamp, events, next, "after", after))
        return commit(writer, { status: "running", events, pos: next }).pipe(
          Effect.zipRight(pruneJournal(events)),
          Effect.zipRight(step(next))
        )
      }
    }
  }

  const timedOut = (pos: Position, stamp: Stamp, events: Array<Draft>) => {
    const error = new DeadlineExceededError({ runId: env.runId, deadline: config.deadline ?? 0 })
    events.push(stamp({ _tag: "RunTimedOut", deadline: config.deadline ?? 0 }))
    return settle(pos, "timed_out", events, failureOf(error))
  }

  const settle = (
    pos: Position,
    status: RunStatus,
    events: Array<Draft>,
    error?: FailureInfo,
    waitUntil: number | null = null
  ): Effect.Effect<Settled, DriveError> =>
    commit(writer, { status, events, pos: status === "failed" || status === "timed_out" ? undefined : pos, error, waitUntil })
      .pipe(
        Effect.tap(() => status === "waiting" ? Effect.void : pruneJournal(events)),
        Effect.map((run) => ({ run, pos }))
      )

  /**
   * Once a step that made model or tool calls has committed (and did not park waiting), no resume
   * needs the run's journal rows: steps run one at a time, so every row belongs to a committed step.
   */
  const pruneJournal = (events: ReadonlyArray<Draft>): Effect.Effect<void> =>
    env.journal !== undefined && events.some((e) => e._tag === "ModelCalled" || e._tag === "ToolReturned")
      ? env.journal.prune(env.runId, Number.MAX_SAFE_INTEGER).pipe(
        Effect.asVoid,
        Effect.catchAllCause((cause) => Effect.logWarning(`run ${env.runId}: pruning its call journal failed`, cause))
      )
      : Effect.void

  return step(writer.cursor.pos)
}
