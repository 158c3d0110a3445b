/**
 * The `CallJournal` port: every model call and tool call a node makes, recorded durably as it
 * completes, under the node instance's idempotency key and the call's index. A retried attempt
 * or a resumed run answers completed calls from the journal instead of sending (and paying for)
 * them again.
 */
import { Context, Effect } from "effect"
import { JournalDivergenceError, RunNotFoundError, StaleClaimError } from "../Errors.js"
import { spanned } from "../internal/Tracing.js"

/** What was called. */
export type CallKind = "model" | "tool"

/** A call's usage, as it was counted against the budgets. */
export interface CallUsage {
  readonly inputTokens: number
  readonly outputTokens: number
  readonly usd: number
}

/** One completed call. */
export interface JournalEntry {
  readonly runId: string
  /** The node instance's idempotency key (unique per run, step, node and fan-out index). */
  readonly key: string
  /** 0-based, in the order the node made its calls (across its attempts). */
  readonly index: number
  /** The step the call belongs to (journal rows of steps before the oldest retained checkpoint are pruned). */
  readonly step: number
  readonly kind: CallKind
  /** The model's or the tool's name. */
  readonly name: string
  /** A hash of the request, to detect a request that changed since it was recorded. */
  readonly requestHash: string
  /** The response, JSON-compatible. */
  readonly response: unknown
  readonly usage: CallUsage | null
  readonly at: number
}

/** The port. */
export class CallJournal extends Context.Tag("fibergraph/CallJournal")<CallJournal, {
  /**
   * Records a completed call, fenced by the writer's claim epoch (`StaleClaimError` when the run
   * was claimed by another worker since). Recording the same key and index again with the same
   * request hash is a no-op; with another hash it is a `JournalDivergenceError`.
   */
  readonly record: (
    entry: JournalEntry,
    fence: { readonly epoch: number }
  ) => Effect.Effect<void, StaleClaimError | JournalDivergenceError | RunNotFoundError>
  /** The recorded calls of one node instance, by index. */
  readonly entries: (runId: string, key: string) => Effect.Effect<ReadonlyArray<JournalEntry>>
  /**
   * Replaces the entries from `fromIndex` on (a node that opted into re-recording after a
   * divergence), fenced like `record`.
   */
  readonly truncate: (
    runId: string,
    key: string,
    fromIndex: number,
    fence: { readonly epoch: number }
  ) => Effect.Effect<void, StaleClaimError | RunNotFoundError>
  /** Drops the entries of steps before `beforeStep`; how many went. */
  readonly prune: (runId: string, beforeStep: number) => Effect.Effect<number>
}>() {}

/**
 * What a backend implements: reads and writes of journal rows. `make` turns it into the port,
 * with the rules (idempotent re-records, divergence, fencing diagnosis, spans) alike for all.
 */
export interface Driver {
  /** Inserts the entry if the run is at `epoch` and no entry has its key and index; whether it did. */
  readonly insert: (entry: JournalEntry, epoch: number) => Effect.Effect<boolean>
  readonly find: (runId: string, key: string, index: number) => Effect.Effect<JournalEntry | undefined>
  readonly entries: (runId: string, key: string) => Effect.Effect<ReadonlyArray<JournalEntry>>
  /** Deletes the entries of `key` from `fromIndex` on if the run is at `epoch`; whether the run was. */
  readonly truncate: (runId: string, key: string, fromIndex: number, epoch: number) => Effect.Effect<boolean>
  readonly prune: (runId: string, beforeStep: number) => Effect.Effect<number>
  /** The run's claim epoch and step, `undefined` when there is no such run. */
  readonly claim: (runId: string) => Effect.Effect<{ readonly epoch: number; readonly step: number } | undefined>
}

/**
 * Builds the port from a driver. Every call is uninterruptible: an interrupt waits for the
 * backend's statement rather than cancelling it (Effect-TS/effect#8068).
 */
export const make = (driver: Driver): CallJournal["Type"] => {
  const fenced = (runId: string, epoch: number) =>
    Effect.flatMap(driver.claim(runId), (claim): Effect.Effect<never, StaleClaimError | RunNotFoundError> =>
      claim === undefined
        ? Effect.fail(new RunNotFoundError({ runId }))
        : Effect.fail(
          new StaleClaimError({
            runId,
            epoch,
            currentEpoch: claim.epoch,
            expectedStep: claim.step,
            currentStep: claim.step
          })
        ))

  const record = (entry: JournalEntry, fence: { readonly epoch: number }) =>
    Effect.gen(function*() {
      if (yield* driver.insert(entry, fence.epoch)) return
      const existing = yield* driver.find(entry.runId, entry.key, entry.index)
      if (existing === undefined) return yield* fenced(entry.runId, fence.epoch)
      if (existing.kind === entry.kind && existing.name === entry.name && existing.requestHash === entry.requestHash) return
      return yield* new JournalDivergenceError({
        runId: entry.runId,
        key: entry.key,
        index: entry.index,
        kind: entry.kind,
        name: entry.name,
        recordedName: `${existing.kind} ${existing.name}`,
        recordedHash: existing.requestHash,
        requestHash: entry.requestHash
      })
    }).pipe(Effect.uninterruptible, spanned("CallJournal.record"))

  const truncate = (runId: string, key: string, fromIndex: number, fence: { readonly epoch: number }) =>
    Effect.flatMap(
      driver.truncate(runId, key, fromIndex, fence.epoch),
      (done) => done ? Effect.void : fenced(runId, fence.epoch)
    ).pipe(Effect.uninterruptible, spanned("CallJournal.truncate"))

  return CallJournal.of({
    record,
    entries: (runId, key) => driver.entries(runId, key).pipe(Effect.uninterruptible, spanned("CallJournal.entries")),
    truncate,
    prune: (runId, beforeStep) => driver.prune(runId, beforeStep).pipe(Effect.uninterruptible, spanned("CallJournal.prune"))
  })
}
