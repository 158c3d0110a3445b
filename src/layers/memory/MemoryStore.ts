/**
 * The in-memory store: `RunStore` and `WorkQueue` over one set of in-memory runs, with the
 * semantics of the SQL store. Nothing survives the process; for tests and `memory://`.
 */
import { Context, Effect, Layer } from "effect"
import type { Scope } from "effect"
import * as CallJournal from "../../services/CallJournal.js"
import * as RunStore from "../../services/RunStore.js"
import * as WorkQueue from "../../services/WorkQueue.js"
import * as CallJournalMemory from "./CallJournalMemory.js"
import * as RunStoreMemory from "./RunStoreMemory.js"
import * as WorkQueueMemory from "./WorkQueueMemory.js"

/** Options of the in-memory store. */
export interface Options extends RunStoreMemory.Options {}

/** The ports of one in-memory store, and its runs. */
export interface Services {
  readonly runStore: RunStore.RunStore["Type"]
  readonly workQueue: WorkQueue.WorkQueue["Type"]
  readonly runs: RunStoreMemory.MemoryRuns
  readonly callJournal: CallJournal.CallJournal["Type"]
}

/** Builds a fresh store; its wake-up hub closes with the scope. */
export const make = (options: Options = {}): Effect.Effect<Services, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { runs, store } = yield* RunStoreMemory.makeWithRuns(options)
    const workQueue = WorkQueue.make(yield* WorkQueueMemory.makeDriver(runs, store))
    return { runStore: store, workQueue, runs, callJournal: CallJournalMemory.make(runs) }
  })

/** The services as a context. */
export const toContext = (
  services: Services
): Context.Context<RunStore.RunStore | WorkQueue.WorkQueue | RunStoreMemory.Runs | CallJournal.CallJournal> =>
  Context.make(RunStore.RunStore, services.runStore).pipe(
    Context.add(WorkQueue.WorkQueue, services.workQueue),
    Context.add(RunStoreMemory.Runs, services.runs),
    Context.add(CallJournal.CallJournal, services.callJournal)
  )

/** `RunStore` and `WorkQueue` over one fresh in-memory store (one per build). */
export const layer = (
  options: Options = {}
): Layer.Layer<RunStore.RunStore | WorkQueue.WorkQueue | RunStoreMemory.Runs | CallJournal.CallJournal> =>
  Layer.scopedContext(Effect.map(make(options), toContext))
