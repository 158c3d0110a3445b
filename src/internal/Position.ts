/**
 * The step model: where a run stands between steps (its position and frontier), what its steps
 * share (the environment), and what a step produces (draft events and an outcome).
 */
import type { CircuitBreakers } from "../CircuitBreaker.js"
import type { StaleClaimError } from "../Errors.js"
import type { ModelDelta, RunEvent } from "../Events.js"
import type { CompiledGraph } from "../Graph.js"
import type { HumanResponse } from "../Node.js"
import type { CallJournal } from "../services/CallJournal.js"
import type { Interrupt, RunConfig } from "../services/RunStore.js"
import type { Clock, Effect } from "effect"
import type { SpendTracker } from "./Budget.js"

/** A node instance of a step's frontier, with its decoded input. */
export interface Entry {
  readonly node: string
  readonly index: number
  readonly input: unknown
}

/** An event under construction: the sequence number is stamped when it is committed. */
export type Draft = { -readonly [K in keyof RunEvent]: RunEvent[K] } & { seq: number }

/** Builds a draft event of a run. */
export type Stamp = <E extends { readonly _tag: RunEvent["_tag"] }>(body: E) => Draft

/** What a run's steps share: the graph, the run's identity and config, its clock, breakers and budget. */
export interface Env {
  readonly graph: CompiledGraph
  readonly runId: string
  readonly config: RunConfig
  readonly clock: Clock.Clock
  readonly breakers: CircuitBreakers["Type"]
  readonly spend: SpendTracker
  /** Prefix of node names in events (a subgraph's nodes appear as `parent/child`). */
  readonly prefix: string
  /** Prefix of the step in idempotency keys (a subgraph's steps nest in its parent's). */
  readonly scope: string
  /** Where `interrupt` takes responses from, when a subgraph inherits its parent node's. */
  readonly resumeSource: (() => HumanResponse | undefined) | undefined
  /** The claim epoch this process holds the run with: writes outside a step commit (the call journal) are fenced by it. */
  readonly epoch: number
  /** Fails once this process has lost the run (its lease ran out): checked before writes outside a step commit. */
  readonly guard: Effect.Effect<void, StaleClaimError>
  /** Hands a live-only event (a model delta) to the run's live subscribers in this process. */
  readonly live: (event: ModelDelta) => Effect.Effect<void>
  /** The call journal of the run's store (agents journal their calls in it), if it has one. */
  readonly journal: CallJournal["Type"] | undefined
}

/** The position a step starts from. */
export interface Position {
  readonly step: number
  readonly state: Record<string, unknown>
  readonly frontier: ReadonlyArray<Entry>
  /** Updates of nodes that already completed in this (waiting) step, by entry key. */
  readonly pending: ReadonlyMap<string, Record<string, unknown>>
  readonly interrupts: ReadonlyArray<Interrupt>
  readonly barriers: Readonly<Record<string, ReadonlyArray<string>>>
}

/** How a step ended. */
export type StepOutcome =
  | {
    readonly _tag: "Advanced"
    readonly events: Array<Draft>
    readonly state: Record<string, unknown>
    readonly frontier: ReadonlyArray<Entry>
    readonly barriers: Record<string, ReadonlyArray<string>>
    readonly executed: ReadonlyArray<string>
  }
  | {
    readonly _tag: "Waiting"
    readonly events: Array<Draft>
    readonly pending: ReadonlyMap<string, Record<string, unknown>>
    readonly interrupts: ReadonlyArray<Interrupt>
    readonly waitMillis: number | undefined
  }
  | { readonly _tag: "Failed"; readonly events: Array<Draft>; readonly error: FailureInfo }

/** Why a run failed, as stored on the run. */
export interface FailureInfo {
  readonly tag: string
  readonly message: string
  readonly error: unknown
}

/** The key of a frontier entry. */
export const entryKey = (node: string, index: number) => `${node}#${index}`

/** The position a run (or a subgraph) starts from: step 0, nothing pending. */
export const initialPosition = (state: Record<string, unknown>, frontier: ReadonlyArray<Entry>): Position => ({
  step: 0,
  state,
  frontier,
  pending: new Map(),
  interrupts: [],
  barriers: {}
})

/** The position after a step that advanced. */
export const nextPosition = (pos: Position, outcome: Extract<StepOutcome, { _tag: "Advanced" }>): Position => ({
  step: pos.step + 1,
  state: outcome.state,
  frontier: outcome.frontier,
  pending: new Map(),
  interrupts: [],
  barriers: outcome.barriers
})
