/**
 * Admission of a new run: its id, its validated input, its stored config, and its first row,
 * event and checkpoint, built without storing anything (the runner stores them, or a queue's
 * submit does, in one transaction with the run's first job).
 */
import { Clock, Duration, Effect, Random } from "effect"
import { InputValidationError, type RoutingError, type StateValidationError, type UserCodeError } from "../Errors.js"
import type { RunEvent } from "../Events.js"
import type { CompiledGraph } from "../Graph.js"
import type { Checkpoint, RunConfig, RunRecord } from "../services/RunStore.js"
import * as State from "../State.js"
import { budgetOf, emptyUsage } from "./Budget.js"
import { toCheckpoint } from "./Codec.js"
import { initialPosition, type Position } from "./Position.js"
import { startFrontier } from "./Routing.js"

/** Options of a new run. */
export interface StartOptions {
  /** A caller-chosen id: starting the same id twice returns the existing run. */
  readonly runId?: string
  readonly tenant?: string
  readonly maxSteps?: number
  /** Fail the run as `timed_out` this long after it starts (stored as an instant). */
  readonly timeout?: Duration.DurationInput
  /** Fail the run as `timed_out` at this instant (epoch ms or a Date). */
  readonly deadline?: number | Date
  readonly budget?: { readonly tokens?: number; readonly usd?: number }
  readonly nodeBudgets?: Readonly<Record<string, { readonly tokens?: number; readonly usd?: number }>>
  readonly interruptBefore?: ReadonlyArray<string>
  readonly interruptAfter?: ReadonlyArray<string>
  /** Node instances that may run at once within a step (default 16). */
  readonly concurrency?: number
  readonly parentRunId?: string
}

/** Errors of accepting a run's input. */
export type StartError = InputValidationError | StateValidationError | RoutingError | UserCodeError

/** Defaults of new runs. */
export interface Defaults {
  readonly maxSteps?: number
  readonly concurrency?: number
}

/** A new run, ready to be stored. */
export interface Admitted {
  readonly run: RunRecord
  readonly events: ReadonlyArray<RunEvent>
  readonly checkpoint: Checkpoint
  readonly pos: Position
}


/** A new run id: time-ordered, then random. */
export const newRunId: Effect.Effect<string> = Effect.gen(function*() {
  const now = yield* Clock.currentTimeMillis
  const a = yield* Random.nextIntBetween(0, 0x7fffffff)
  const b = yield* Random.nextIntBetween(0, 0x7fffffff)
  return `run_${now.toString(36).padStart(9, "0")}${a.toString(36).padStart(6, "0")}${b.toString(36).padStart(6, "0")}`
})

const validateInput = (graph: CompiledGraph, input: Record<string, unknown>): InputValidationError | undefined => {
  for (const key of Object.keys(input)) {
    const validate = graph.state.validators[key]
    if (validate === undefined) {
      return new InputValidationError({
        graphId: graph.id,
        detail: `unknown state key "${key}"; the state has [${graph.state.keys.join(", ")}]`
      })
    }
    const problem = input[key] === undefined ? undefined : validate(input[key])
    if (problem !== undefined) return new InputValidationError({ graphId: graph.id, detail: `key "${key}": ${problem}` })
  }
  return undefined
}

const configOf = (opts: StartOptions, defaults: Defaults, now: number): RunConfig => ({
  maxSteps: opts.maxSteps ?? defaults.maxSteps ?? 1000,
  deadline: opts.deadline !== undefined
    ? (typeof opts.deadline === "number" ? opts.deadline : opts.deadline.getTime())
    : opts.timeout !== undefined
    ? now + Duration.toMillis(opts.timeout)
    : null,
  budget: budgetOf(opts.budget),
  nodeBudgets: Object.fromEntries(Object.entries(opts.nodeBudgets ?? {}).map(([k, v]) => [k, budgetOf(v)])),
  interruptBefore: opts.interruptBefore ?? [],
  interruptAfter: opts.interruptAfter ?? [],
  concurrency: opts.concurrency ?? defaults.concurrency ?? 16
})

/** Validates a new run's input and builds its first row, event and checkpoint, without storing them. */
export const prepare = (
  graph: CompiledGraph,
  input: Record<string, unknown>,
  opts: StartOptions = {},
  defaults: Defaults = {}
): Effect.Effect<Admitted, StartError> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const runId = opts.runId ?? (yield* newRunId)
    const invalid = validateInput(graph, input)
    if (invalid !== undefined) return yield* Effect.fail(invalid)
    const state = State.initial(graph.state, input)
    const frontier = startFrontier({ graph, prefix: "" }, state)
    if (!Array.isArray(frontier)) return yield* Effect.fail(frontier)
    const run: RunRecord = {
      runId,
      tenant: opts.tenant ?? "default",
      graphId: graph.id,
      graphVersion: graph.version,
      graphHash: graph.hash,
      status: "pending",
      step: 0,
      claimEpoch: 0,
      lastSeq: 1,
      config: configOf(opts, defaults, now),
      usage: emptyUsage,
      waitUntil: null,
      parentRunId: opts.parentRunId ?? null,
      forkedFrom: null,
      error: null,
      createdAt: now,
      updatedAt: now
    }
    const pos: Position = initialPosition(state, frontier)
    const started: RunEvent = {
      _tag: "RunStarted",
      runId,
      seq: 1,
      step: 0,
      at: now,
      graphId: graph.id,
      graphVersion: graph.version,
      graphHash: graph.hash
    }
    return { run, events: [started], checkpoint: toCheckpoint(graph, runId, pos, 1, now), pos }
  })
