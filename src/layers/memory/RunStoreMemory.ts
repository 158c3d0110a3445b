/**
 * An in-memory `RunStore`: deterministic and inspectable, with exactly the commit semantics of
 * the SQL store (fenced by epoch and step, contiguous sequences, atomic, checkpoint pruning).
 */
import { Effect, Layer, Option } from "effect"
import {
  EventLogCorruptionError,
  EventSequenceConflictError,
  RunNotFoundError,
  StaleClaimError
} from "../../Errors.js"
import type { RunEvent } from "../../Events.js"
import { type Checkpoint, type RunFilter, type RunRecord, RunStore, type StepCommit } from "../../services/RunStore.js"

/** Options of the in-memory store. */
export interface Options {
  /** How many checkpoints to keep per run (default 3). */
  readonly retainCheckpoints?: number
}

interface Entry {
  run: RunRecord
  events: Array<RunEvent>
  /** The sequence of `events[0]`; earlier events were compacted away. */
  firstSeq: number
  checkpoints: Array<Checkpoint>
}

/** Builds an in-memory store. */
export const make = (options: Options = {}) =>
  Effect.sync(() => {
    const retain = Math.max(1, options.retainCheckpoints ?? 3)
    const runs = new Map<string, Entry>()

    const entry = (runId: string) =>
      Effect.suspend(() => {
        const found = runs.get(runId)
        return found === undefined ? Effect.fail(new RunNotFoundError({ runId })) : Effect.succeed(found)
      })

    const matches = (run: RunRecord, filter: RunFilter) => {
      if (filter.status !== undefined) {
        const statuses = typeof filter.status === "string" ? [filter.status] : filter.status
        if (!statuses.includes(run.status)) return false
      }
      if (filter.graphId !== undefined && run.graphId !== filter.graphId) return false
      if (filter.tenant !== undefined && run.tenant !== filter.tenant) return false
      if (filter.before !== undefined) {
        const { createdAt, runId } = filter.before
        if (run.createdAt > createdAt || (run.createdAt === createdAt && run.runId >= runId)) return false
      }
      return true
    }

    return RunStore.of({
      create: (run, events, checkpoint) =>
        Effect.sync(() => {
          const existing = runs.get(run.runId)
          if (existing !== undefined) return { run: existing.run, created: false }
          runs.set(run.runId, { run, events: [...events], firstSeq: 1, checkpoints: [checkpoint] })
          return { run, created: true }
        }),

      get: (runId) => Effect.map(entry(runId), (e) => e.run),

      acquire: (runId) =>
        Effect.map(entry(runId), (e) => {
          e.run = { ...e.run, claimEpoch: e.run.claimEpoch + 1 }
          return e.run
        }),

      commit: (commit: StepCommit) =>
        Effect.flatMap(entry(commit.runId), (e): Effect.Effect<RunRecord, StaleClaimError | EventSequenceConflictError> => {
          const run = e.run
          if (run.claimEpoch !== commit.epoch || run.step !== commit.expectedStep) {
            return Effect.fail(
              new StaleClaimError({
                runId: run.runId,
                epoch: commit.epoch,
                currentEpoch: run.claimEpoch,
                expectedStep: commit.expectedStep,
                currentStep: run.step
              })
            )
          }
          let expected = run.lastSeq + 1
          for (const event of commit.events) {
            if (event.seq !== expected) {
              return Effect.fail(
                new EventSequenceConflictError({ runId: run.runId, seq: event.seq, lastSeq: run.lastSeq })
              )
            }
            expected++
          }
          for (const event of commit.events) e.events.push(event)
          if (commit.checkpoint !== undefined) {
            e.checkpoints.push(commit.checkpoint)
            if (e.checkpoints.length > retain) e.checkpoints.splice(0, e.checkpoints.length - retain)
          }
          e.run = {
            ...run,
            status: commit.status,
            step: commit.step,
            lastSeq: expected - 1,
            usage: commit.usage,
            waitUntil: commit.waitUntil,
            error: commit.error,
            updatedAt: commit.at,
            ...(commit.graph === undefined ? {} : { graphVersion: commit.graph.version, graphHash: commit.graph.hash })
          }
          return Effect.succeed(e.run)
        }),

      events: (runId, afterSeq) =>
        Effect.flatMap(entry(runId), (e) => {
          const start = Math.max(0, afterSeq + 1 - e.firstSeq)
          if (afterSeq + 1 < e.firstSeq) {
            return Effect.fail(
              new EventLogCorruptionError({
                runId,
                detail: `events before sequence ${e.firstSeq} were compacted; read from a checkpoint instead`
              })
            )
          }
          return Effect.succeed(e.events.slice(start))
        }),

      latestCheckpoint: (runId) =>
        Effect.map(entry(runId), (e) => Option.fromNullable(e.checkpoints[e.checkpoints.length - 1])),

      checkpoints: (runId) => Effect.map(entry(runId), (e) => [...e.checkpoints]),

      list: (filter) =>
        Effect.sync(() => {
          const out: Array<RunRecord> = []
          for (const e of runs.values()) if (matches(e.run, filter)) out.push(e.run)
          out.sort((a, b) => b.createdAt - a.createdAt || (a.runId < b.runId ? 1 : a.runId > b.runId ? -1 : 0))
          return filter.limit === undefined ? out : out.slice(0, filter.limit)
        }),

      fork: (runId, { newRunId, atSeq, at }) =>
        Effect.flatMap(entry(runId), (e): Effect.Effect<RunRecord, EventLogCorruptionError> => {
          const checkpoint = atSeq === undefined
            ? e.checkpoints[e.checkpoints.length - 1]
            : e.checkpoints.find((c) => c.seq === atSeq)
          if (checkpoint === undefined) {
            return Effect.fail(
              new EventLogCorruptionError({
                runId,
                detail: `no retained checkpoint at sequence ${atSeq}; retained: ${e.checkpoints.map((c) => c.seq).join(", ")}`
              })
            )
          }
          if (runs.has(newRunId)) return Effect.succeed(runs.get(newRunId)!.run)
          if (checkpoint.seq < e.firstSeq - 1) {
            return Effect.fail(new EventLogCorruptionError({ runId, detail: "history before the checkpoint was compacted" }))
          }
          const events = e.events
            .slice(0, checkpoint.seq - e.firstSeq + 1)
            .map((event) => ({ ...event, runId: newRunId }))
          const run: RunRecord = {
            ...e.run,
            runId: newRunId,
            status: checkpoint.interrupts.length > 0 ? "waiting" : "pending",
            step: checkpoint.step,
            claimEpoch: 0,
            lastSeq: checkpoint.seq,
            waitUntil: null,
            error: null,
            forkedFrom: { runId, seq: checkpoint.seq },
            createdAt: at,
            updatedAt: at
          }
          runs.set(newRunId, {
            run,
            events,
            firstSeq: e.firstSeq,
            checkpoints: [{ ...checkpoint, runId: newRunId }]
          })
          return Effect.succeed(run)
        }),

      compact: (runId, beforeSeq) =>
        Effect.map(entry(runId), (e) => {
          const covered = e.checkpoints[0]?.seq ?? 0
          const upTo = Math.min(beforeSeq - 1, covered)
          const drop = Math.max(0, upTo - e.firstSeq + 1)
          if (drop > 0) {
            e.events.splice(0, drop)
            e.firstSeq += drop
          }
          return drop
        })
    })
  })

/** The in-memory store as a layer (one fresh store per build). */
export const layer = (options: Options = {}): Layer.Layer<RunStore> => Layer.effect(RunStore, make(options))
