/**
 * Control writes of a run: a human's answer, a cancel, and the expiry of a wait or of the run's
 * deadline. Each is decided from the writer's own view of the run and committed through the one
 * commit path, so it is fenced exactly like a step: of two at once, one wins.
 */
import { Effect } from "effect"
import {
  DeadlineExceededError,
  type InputValidationError,
  RunStatusError,
  type StaleClaimError
} from "../Errors.js"
import type { CompiledGraph } from "../Graph.js"
import type { HumanResponse } from "../Node.js"
import type { Interrupt, RunRecord } from "../services/RunStore.js"
import * as State from "../State.js"
import { decodeUpdate } from "./Codec.js"
import { commit, failureOf, stampFor, type Writer } from "./Commit.js"
import type { Position } from "./Position.js"

/** Which open interrupt a response answers (default: all of them). */
export interface ResponseTarget {
  readonly node?: string
  readonly index?: number
}

/** Where a run stands after an answer. */
export type Answered = "running" | "waiting" | "cancelled"

/**
 * Applies a human response to a waiting run and commits it: the targeted open interrupts (all, by
 * default) receive it, an edit's updates are decoded and merged first, and a rejected breakpoint
 * cancels the run.
 */
export const answer = (
  writer: Writer,
  graph: CompiledGraph,
  response: HumanResponse,
  target: ResponseTarget | undefined
): Effect.Effect<Answered, RunStatusError | InputValidationError | StaleClaimError> =>
  Effect.gen(function*() {
    const { pos, run } = writer.cursor
    const runId = run.runId
    if (run.status !== "waiting") {
      return yield* Effect.fail(new RunStatusError({ runId, status: run.status, expected: "waiting" }))
    }
    const awaiting = (i: Interrupt) => !i.answered
    const targeted = (i: Interrupt) =>
      awaiting(i) &&
      (target?.node === undefined || target.node === i.node) &&
      (target?.index === undefined || target.index === i.index)
    const interrupts = pos.interrupts
    if (!interrupts.some(targeted)) {
      return yield* Effect.fail(
        new RunStatusError({ runId, status: run.status, expected: `waiting on ${target?.node ?? "a node"}` })
      )
    }
    const stamp = stampFor(writer, pos.step)
    if (response._tag === "reject" && interrupts.some((i) => targeted(i) && i.kind !== "node")) {
      yield* commit(writer, { status: "cancelled", events: [stamp({ _tag: "RunCancelled", reason: "rejected at breakpoint" })] })
      return "cancelled"
    }
    let state = pos.state
    if (response._tag === "edit") {
      const update = yield* decodeUpdate(graph, response.update)
      state = State.reduce(graph.state, state, update)
    }
    const answered: Position = {
      ...pos,
      state,
      interrupts: interrupts.flatMap((i) =>
        !targeted(i) ? [i] : i.kind === "after" ? [] : [{ ...i, resumes: [...i.resumes, response], answered: true }]
      )
    }
    const stillWaiting = interrupts.some((i) => awaiting(i) && !targeted(i))
    yield* commit(writer, {
      status: stillWaiting ? "waiting" : "running",
      events: [stamp({ _tag: "RunResumed", response: response._tag })],
      pos: answered,
      waitUntil: stillWaiting ? run.waitUntil : null
    })
    return stillWaiting ? "waiting" : "running"
  })

/** Cancels the writer's run. */
export const cancel = (writer: Writer, reason: string): Effect.Effect<void, RunStatusError | StaleClaimError> =>
  Effect.suspend(() => {
    const stamp = stampFor(writer, writer.cursor.run.step)
    return Effect.asVoid(commit(writer, { status: "cancelled", events: [stamp({ _tag: "RunCancelled", reason })] }))
  })

/** Ends the writer's run as `timed_out` at its deadline. */
export const timeOut = (writer: Writer): Effect.Effect<void, RunStatusError | StaleClaimError> =>
  Effect.suspend(() => {
    const deadline = writer.cursor.run.config.deadline ?? 0
    const stamp = stampFor(writer, writer.cursor.run.step)
    return Effect.asVoid(commit(writer, {
      status: "timed_out",
      events: [stamp({ _tag: "RunTimedOut", deadline })],
      error: failureOf(new DeadlineExceededError({ runId: writer.cursor.run.runId, deadline }))
    }))
  })

/** What is due for a waiting run at `now`: its deadline, its wait's timeout, or nothing yet. */
export const due = (run: RunRecord, now: number): "deadline" | "wait" | undefined => {
  if (run.status !== "waiting") return undefined
  if (run.config.deadline !== null && run.config.deadline <= now) return "deadline"
  if (run.waitUntil !== null && run.waitUntil <= now) return "wait"
  return undefined
}

/** The next instant something falls due for a run (its wait's timeout or its deadline), if any. */
export const nextDue = (run: RunRecord): number | null => {
  const { waitUntil } = run
  const { deadline } = run.config
  return waitUntil === null ? deadline : deadline === null ? waitUntil : Math.min(waitUntil, deadline)
}
