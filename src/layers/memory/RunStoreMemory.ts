/**
 * The in-memory `RunStore` driver: runs, their events and checkpoints in maps, with exactly the
 * semantics of the SQL store (the port's rules live in `RunStore.make`). Each driver call is one
 * synchronous step, so it is atomic; `MemoryRuns` is the state the memory queue shares.
 */
import * as CallJournal from "../../services/CallJournal.js"
import * as CallJournalMemory from "./CallJournalMemory.js"
import { Context, Effect, Layer, Option } from "effect"
import type { RunEvent } from "../../Events.js"
import type { Checkpoint, RunRecord } from "../../Run.js"
import * as RunStore from "../../services/RunStore.js"
import type { ListFilter, StepCommit } from "../../services/RunStore.js"

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

const matches = (run: RunRecord, filter: ListFilter) => {
  if (filter.status !== undefined && !filter.status.includes(run.status)) return false
  if (filter.graphId !== undefined && run.graphId !== filter.graphId) return false
  if (filter.tenant !== undefined && run.tenant !== filter.tenant) return false
  if (filter.before !== undefined) {
    const { createdAt, runId } = filter.before
    if (run.createdAt > createdAt || (run.createdAt === createdAt && run.runId >= runId)) return false
  }
  return true
}

/** The runs of one in-memory store, with synchronous reads and writes (each one atomic). */
export class MemoryRuns {
  readonly #runs = new Map<string, Entry>()
  readonly #retain: number

  constructor(options: Options = {}) {
    this.#retain = Math.max(1, options.retainCheckpoints ?? 3)
  }

  /** The stored run. */
  get(runId: string): RunRecord | undefined {
    return this.#runs.get(runId)?.run
  }

  /** Stores a new run; `undefined` when the id exists. */
  insert(run: RunRecord, events: ReadonlyArray<RunEvent>, checkpoint: Checkpoint): RunRecord | undefined {
    if (this.#runs.has(run.runId)) return undefined
    this.#runs.set(run.runId, { run, events: [...events], firstSeq: 1, checkpoints: [checkpoint] })
    return run
  }

  /** Bumps the run's claim epoch. */
  acquire(runId: string): RunRecord | undefined {
    const e = this.#runs.get(runId)
    if (e === undefined) return undefined
    e.run = { ...e.run, claimEpoch: e.run.claimEpoch + 1 }
    return e.run
  }

  /** Writes a fenced commit; `undefined` when the fence refuses it. */
  commit(c: StepCommit): RunRecord | undefined {
    const e = this.#runs.get(c.runId)
    if (e === undefined) return undefined
    const run = e.run
    const first = c.events[0]?.seq ?? run.lastSeq + 1
    if (run.claimEpoch !== c.epoch || run.step !== c.expectedStep || first !== run.lastSeq + 1) return undefined
    for (const event of c.events) e.events.push(event)
    if (c.checkpoint !== undefined) {
      e.checkpoints.push(c.checkpoint)
      if (e.checkpoints.length > this.#retain) e.checkpoints.splice(0, e.checkpoints.length - this.#retain)
    }
    e.run = {
      ...run,
      status: c.status,
      step: c.step,
      lastSeq: run.lastSeq + c.events.length,
      usage: c.usage,
      waitUntil: c.waitUntil,
      error: c.error,
      updatedAt: c.at,
      ...(c.graph === undefined ? {} : { graphVersion: c.graph.version, graphHash: c.graph.hash })
    }
    return e.run
  }

  /** The retained log after `afterSeq`. */
  events(runId: string, afterSeq: number): RunStore.EventLog | undefined {
    const e = this.#runs.get(runId)
    if (e === undefined) return undefined
    return {
      firstSeq: e.firstSeq,
      lastSeq: e.run.lastSeq,
      events: e.events.slice(Math.max(0, afterSeq + 1 - e.firstSeq))
    }
  }

  /** Retained checkpoints, oldest first. */
  checkpoints(runId: string): ReadonlyArray<Checkpoint> | undefined {
    const e = this.#runs.get(runId)
    return e === undefined ? undefined : [...e.checkpoints]
  }

  /** Runs matching the filter, newest first. */
  list(filter: ListFilter): ReadonlyArray<RunRecord> {
    const out: Array<RunRecord> = []
    for (const e of this.#runs.values()) if (matches(e.run, filter)) out.push(e.run)
    out.sort((a, b) => b.createdAt - a.createdAt || (a.runId < b.runId ? 1 : a.runId > b.runId ? -1 : 0))
    return filter.limit === undefined ? out : out.slice(0, filter.limit)
  }

  /** Stores a fork of `sourceRunId`; `undefined` when the new id exists. */
  insertFork(fork: Parameters<RunStore.Driver["insertFork"]>[0]): RunRecord | undefined {
    const source = this.#runs.get(fork.sourceRunId)
    if (source === undefined || this.#runs.has(fork.run.runId)) return undefined
    const events = source.events
      .slice(0, fork.checkpoint.seq - source.firstSeq + 1)
      .map((event) => ({ ...event, runId: fork.run.runId }))
    this.#runs.set(fork.run.runId, { run: fork.run, events, firstSeq: fork.firstSeq, checkpoints: [fork.checkpoint] })
    return fork.run
  }

  /** Drops the events up to `upToSeq`; how many went. */
  dropEvents(runId: string, upToSeq: number): number {
    const e = this.#runs.get(runId)
    if (e === undefined) return 0
    const drop = Math.max(0, upToSeq - e.firstSeq + 1)
    if (drop > 0) {
      e.events.splice(0, drop)
      e.firstSeq += drop
    }
    return drop
  }
}

/** The state of the in-memory store, for the memory queue that works on the same runs. */
export class Runs extends Context.Tag("fibergraph/RunStoreMemory/Runs")<Runs, MemoryRuns>() {}

/** The driver over `runs`. */
export const driver = (runs: MemoryRuns): RunStore.Driver => ({
  insert: (run, events, checkpoint) => Effect.sync(() => runs.insert(run, events, checkpoint)),
  get: (runId) => Effect.sync(() => runs.get(runId)),
  acquire: (runId) => Effect.sync(() => runs.acquire(runId)),
  commit: (c) => Effect.sync(() => runs.commit(c)),
  events: (runId, afterSeq) => Effect.sync(() => runs.events(runId, afterSeq)),
  latestCheckpoint: (runId) =>
    Effect.sync(() => {
      const retained = runs.checkpoints(runId)
      return retained === undefined ? undefined : Option.fromNullable(retained[retained.length - 1])
    }),
  checkpoints: (runId) => Effect.sync(() => runs.checkpoints(runId)),
  list: (filter) => Effect.sync(() => runs.list(filter)),
  insertFork: (fork) => Effect.sync(() => runs.insertFork(fork)),
  dropEvents: (runId, upToSeq) => Effect.sync(() => runs.dropEvents(runId, upToSeq)),
  atomically: (effect) => effect
})

/** Builds an in-memory store. */
export const make = (options: Options = {}) => Effect.sync(() => RunStore.make(driver(new MemoryRuns(options))))

/** The store and its state, built together. */
export const makeWithRuns = (options: Options = {}) =>
  Effect.sync(() => {
    const runs = new MemoryRuns(options)
    return { runs, store: RunStore.make(driver(runs)) }
  })

/** The in-memory store as a layer (one fresh store per build), with its `Runs` for the memory queue. */
export const layer = (options: Options = {}): Layer.Layer<RunStore.RunStore | Runs | CallJournal.CallJournal> =>
  Layer.effectContext(
    Effect.map(makeWithRuns(options), ({ runs, store }) =>
      Context.make(RunStore.RunStore, store).pipe(
        Context.add(Runs, runs),
        Context.add(CallJournal.CallJournal, CallJournalMemory.make(runs))
      ))
  )
