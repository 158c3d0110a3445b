/**
 * Loading a stored run for a graph: the graph check, the log check (the log from the checkpoint's
 * last event on reaches the run's last sequence and holds no terminal event the row does not show), and the
 * checkpoint migration when an older graph version stored the run.
 */
import { Effect, Option, ParseResult } from "effect"
import {
  CheckpointMigrationError,
  EventLogCorruptionError,
  formatParseError,
  GraphMismatchError,
  RunNotFoundError,
  StaleClaimError,
  UserCodeError
} from "../Errors.js"
import { isTerminal } from "../Events.js"
import type { CompiledGraph } from "../Graph.js"
import { type RunRecord, type RunStore, terminalStatuses } from "../services/RunStore.js"
import * as State from "../State.js"
import { encodeState, fromCheckpoint } from "./Codec.js"
import type { Position } from "./Position.js"

/** Errors of taking up a stored run with a graph. */
export type LoadError = RunNotFoundError | GraphMismatchError | EventLogCorruptionError | CheckpointMigrationError

/** A loaded run: the row the position belongs to, and the version it was migrated from, if it was. */
export interface Loaded {
  readonly run: RunRecord
  readonly pos: Position
  readonly migratedFrom: string | undefined
}

/** Refuses a run stored by another graph or another version of it. */
export const checkGraph = (graph: CompiledGraph, run: RunRecord): Effect.Effect<void, GraphMismatchError> =>
  run.graphId === graph.id && run.graphHash === graph.hash
    ? Effect.void
    : Effect.fail(
      new GraphMismatchError({
        runId: run.runId,
        graphId: run.graphId,
        storedVersion: run.graphVersion,
        storedHash: run.graphHash,
        version: graph.version,
        hash: graph.hash
      })
    )

const maxRereads = 3

/**
 * Loads a run's position for `graph`. The row and the log are read at different moments, so a
 * log that ends elsewhere than the row says is read again: for an owned row (`owned`: its epoch is
 * ours) a newer epoch means the claim was lost (`StaleClaimError`), never corruption; for a row
 * read by an observer the newer row is loaded instead.
 */
export const load = (
  store: RunStore["Type"],
  graph: CompiledGraph,
  run: RunRecord,
  owned: boolean
): Effect.Effect<Loaded, LoadError | StaleClaimError> =>
  Effect.gen(function*() {
    let current = run
    for (let attempt = 0;; attempt++) {
      const runId = current.runId
      const sameGraph = current.graphId === graph.id && current.graphHash === graph.hash
      const migration = sameGraph || current.graphId !== graph.id
        ? undefined
        : graph.migrations.find((m) => m.fromVersion === current.graphVersion)
      if (!sameGraph && migration === undefined) yield* checkGraph(graph, current)
      const stored = yield* store.latestCheckpoint(runId)
      const tail = Option.isNone(stored) ? [] : yield* store.events(runId, stored.value.seq - 1)
      const last = Option.isNone(stored) ? undefined : tail.length === 0 ? stored.value.seq : tail[tail.length - 1]!.seq
      if (last !== current.lastSeq) {
        const fresh = yield* store.get(runId)
        if (owned && fresh.claimEpoch !== current.claimEpoch) {
          return yield* Effect.fail(
            new StaleClaimError({
              runId,
              epoch: current.claimEpoch,
              currentEpoch: fresh.claimEpoch,
              expectedStep: current.step,
              currentStep: fresh.step
            })
          )
        }
        if (!owned && fresh.lastSeq !== current.lastSeq && attempt < maxRereads) {
          current = fresh
          continue
        }
        return yield* Effect.fail(
          new EventLogCorruptionError({
            runId,
            detail: last === undefined
              ? "the run has no checkpoint"
              : `the event log ends at sequence ${last} but the run has committed up to ${current.lastSeq}`
          })
        )
      }
      if (Option.isNone(stored)) {
        return yield* Effect.fail(new EventLogCorruptionError({ runId, detail: "the run has no checkpoint" }))
      }
      const ended = tail.find(isTerminal)
      if (ended !== undefined && !terminalStatuses.has(current.status)) {
        return yield* Effect.fail(
          new EventLogCorruptionError({
            runId,
            detail: `the event log ended with ${ended._tag} at sequence ${ended.seq} but the run's row says ${current.status}`
          })
        )
      }
      if (migration === undefined) {
        return { run: current, pos: yield* fromCheckpoint(graph, stored.value), migratedFrom: undefined }
      }
      const fromVersion = current.graphVersion
      const migrated = yield* migration.migrate(stored.value.state).pipe(
        Effect.mapError((cause) =>
          new CheckpointMigrationError({
            runId,
            graphId: graph.id,
            fromVersion,
            toVersion: graph.version,
            detail: ParseResult.isParseError(cause)
              ? formatParseError(cause)
              : cause instanceof UserCodeError
              ? cause.message
              : String(cause)
          })
        )
      )
      const state = { ...State.initial(graph.state, {}), ...(migrated as Record<string, unknown>) }
      const pos = yield* fromCheckpoint(graph, { ...stored.value, state: encodeState(graph, state) })
      return { run: current, pos, migratedFrom: fromVersion }
    }
  })
