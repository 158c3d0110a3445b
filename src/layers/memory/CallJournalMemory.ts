/**
 * The in-memory call journal, fenced against the claim epochs of the in-memory runs (`Runs`), so
 * a journal write of a stale claim is refused exactly as the SQL journal refuses it.
 */
import { Effect } from "effect"
import * as CallJournal from "../../services/CallJournal.js"
import type { MemoryRuns } from "./RunStoreMemory.js"

const keyOf = (runId: string, key: string) => `${runId}\u0000${key}`

/** The driver over a map of entries, fenced by `runs`. */
export const driver = (runs: MemoryRuns): CallJournal.Driver => {
  const rows = new Map<string, Array<CallJournal.JournalEntry>>()
  const at = (runId: string, epoch: number) => runs.get(runId)?.claimEpoch === epoch
  return {
    insert: (entry, epoch) =>
      Effect.sync(() => {
        if (!at(entry.runId, epoch)) return false
        const list = rows.get(keyOf(entry.runId, entry.key)) ?? []
        if (list.some((e) => e.index === entry.index)) return false
        list.push(entry)
        list.sort((a, b) => a.index - b.index)
        rows.set(keyOf(entry.runId, entry.key), list)
        return true
      }),
    find: (runId, key, index) => Effect.sync(() => rows.get(keyOf(runId, key))?.find((e) => e.index === index)),
    entries: (runId, key) => Effect.sync(() => [...(rows.get(keyOf(runId, key)) ?? [])]),
    truncate: (runId, key, fromIndex, epoch) =>
      Effect.sync(() => {
        if (!at(runId, epoch)) return false
        const list = rows.get(keyOf(runId, key))
        if (list !== undefined) rows.set(keyOf(runId, key), list.filter((e) => e.index < fromIndex))
        return true
      }),
    prune: (runId, beforeStep) =>
      Effect.sync(() => {
        let dropped = 0
        for (const [k, list] of rows) {
          if (!k.startsWith(`${runId}\u0000`)) continue
          const kept = list.filter((e) => e.step >= beforeStep)
          dropped += list.length - kept.length
          if (kept.length === 0) rows.delete(k)
          else rows.set(k, kept)
        }
        return dropped
      }),
    claim: (runId) =>
      Effect.sync(() => {
        const run = runs.get(runId)
        return run === undefined ? undefined : { epoch: run.claimEpoch, step: run.step }
      })
  }
}

/** The journal over the given in-memory runs (`RunStoreMemory.layer` and `MemoryStore.layer` provide one). */
export const make = (runs: MemoryRuns): CallJournal.CallJournal["Type"] => CallJournal.make(driver(runs))
