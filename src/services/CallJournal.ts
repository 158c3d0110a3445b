/**
 * The `CallJournal` port: every model call and tool call a node makes, recorded durably as it
 * completes, under the node instance's idempotency key and the call's index. A retried attempt
 * or a resumed run answers completed calls from the journal instead of sending (and paying for)
 * them again.
 */
import { Context, type Effect } from "effect"
import type { JournalDivergenceError, RunNotFoundError, StaleClaimError } from "../Errors.js"

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
