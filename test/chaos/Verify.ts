/**
 * The invariants of the chaos and partition tests, checked from the database once the fleet has
 * stopped: every run completed and its job done; every event log contiguous; every step committed
 * once, by the claim that held the run then (the audit trail written by the `chaos_audit` trigger
 * in the committing transaction); checkpoints monotonic; no node instance executed twice under the
 * claim that committed its step, and none executed again after its step was committed; every
 * commit a worker reported rejected as stale absent from the audit trail.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect } from "effect"
import { expectedSteps, expectedSummary } from "./ChaosGraph.js"
import type { Line } from "./Protocol.js"

/** One row of `chaos_audit`: a claim (epoch bump) or a commit of a run row, with the writer's connection name. */
export interface AuditRow {
  readonly id: number
  readonly runId: string
  readonly kind: "claim" | "commit"
  readonly oldEpoch: number
  readonly newEpoch: number
  readonly oldStep: number
  readonly newStep: number
  readonly oldLastSeq: number
  readonly newLastSeq: number
  readonly status: string
  readonly app: string
  /** Server time in epoch microseconds (comparable with `EffectRow.at`). */
  readonly at: number
}

/** One side-effect row. */
export interface EffectRow {
  readonly key: string
  readonly runId: string
  readonly node: string
  readonly step: number
  readonly epoch: number
  readonly pid: number
  readonly app: string
  /** Server time in epoch microseconds. */
  readonly at: number
}

/** A commit line of one worker process. */
export type CommitLine = Extract<Line, { readonly _tag: "commit" }> & { readonly app: string }

/** The commit that moved a run past one step. */
export interface StepCommitRecord {
  readonly epoch: number
  readonly app: string
  readonly id: number
  readonly at: number
}

/** What the database holds after a test, read once. */
export interface Snapshot {
  readonly audit: ReadonlyArray<AuditRow>
  readonly effects: ReadonlyArray<EffectRow>
  /** Per run, per step: the commit that advanced it. */
  readonly stepCommits: ReadonlyMap<string, ReadonlyMap<number, StepCommitRecord>>
  readonly staleCounted: number
}

/** The figures a test prints. */
export interface Figures {
  readonly runs: number
  readonly claims: number
  readonly reclaims: number
  readonly stepCommits: number
  readonly commitsReported: number
  readonly staleReported: number
  readonly staleCounted: number
  readonly defectsReported: number
  readonly sideEffects: number
  readonly reexecutedInstances: number
  readonly extraExecutions: number
}

/** The outcome of the verification. */
export interface Verdict {
  readonly violations: ReadonlyArray<string>
  readonly figures: Figures
  readonly snapshot: Snapshot
}

const micros = (column: string) => `(extract(epoch from ${column}) * 1000000)::bigint`

/** Reads the snapshot. */
export const snapshot = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const audit = (yield* sql<Record<string, string | number>>`
    SELECT id, run_id, kind, old_epoch, new_epoch, old_step, new_step, old_last_seq, new_last_seq, status, app,
           ${sql.literal(micros("at"))} AS at
    FROM chaos_audit ORDER BY id`).map((r): AuditRow => ({
      id: Number(r["id"]),
      runId: String(r["run_id"]),
      kind: r["kind"] === "claim" ? "claim" : "commit",
      oldEpoch: Number(r["old_epoch"]),
      newEpoch: Number(r["new_epoch"]),
      oldStep: Number(r["old_step"]),
      newStep: Number(r["new_step"]),
      oldLastSeq: Number(r["old_last_seq"]),
      newLastSeq: Number(r["new_last_seq"]),
      status: String(r["status"]),
      app: String(r["app"]),
      at: Number(r["at"])
    }))
  const effects = (yield* sql<Record<string, string | number>>`
    SELECT key, run_id, node, step, epoch, pid, app, ${sql.literal(micros("at"))} AS at
    FROM chaos_effects ORDER BY at, ctid`).map((r): EffectRow => ({
      key: String(r["key"]),
      runId: String(r["run_id"]),
      node: String(r["node"]),
      step: Number(r["step"]),
      epoch: Number(r["epoch"]),
      pid: Number(r["pid"]),
      app: String(r["app"]),
      at: Number(r["at"])
    }))
  const [stale] = yield* sql<{ readonly n: string | number | null }>`SELECT sum(n) AS n FROM chaos_stale`
  const stepCommits = new Map<string, Map<number, StepCommitRecord>>()
  for (const row of audit) {
    if (row.kind !== "commit" || row.newStep !== row.oldStep + 1) continue
    const steps = stepCommits.get(row.runId) ?? new Map<number, StepCommitRecord>()
    stepCommits.set(row.runId, steps)
    if (!steps.has(row.oldStep)) steps.set(row.oldStep, { epoch: row.newEpoch, app: row.app, id: row.id, at: row.at })
  }
  return { audit, effects, stepCommits, staleCounted: Number(stale?.n ?? 0) } satisfies Snapshot
})

/**
 * Checks every invariant for the given runs (run id → loop rounds) and the commit lines the
 * workers printed. `allowDefects`: commits that died (a lost connection) are expected, not violations.
 */
export const verify = (
  runs: ReadonlyMap<string, number>,
  lines: ReadonlyArray<CommitLine>,
  options: { readonly allowDefects?: boolean } = {}
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const violations: Array<string> = []
    const fail = (message: string) => {
      if (violations.length < 200) violations.push(message)
    }
    const ids = [...runs.keys()]

    // Every run completed, at its last step, and its jobs are done.
    const stored = yield* sql<{ readonly run_id: string; readonly status: string; readonly step: number | string }>`
      SELECT run_id, status, step FROM fibergraph.runs WHERE ${sql.in("run_id", ids)}`
    const byId = new Map(stored.map((r) => [r.run_id, r]))
    for (const [runId, limit] of runs) {
      const run = byId.get(runId)
      if (run === undefined) fail(`${runId}: the run is missing`)
      else if (run.status !== "completed") fail(`${runId}: the run is ${run.status}, not completed`)
      else if (Number(run.step) !== expectedSteps(limit).length) {
        fail(`${runId}: the run ended at step ${run.step}, expected ${expectedSteps(limit).length}`)
      }
    }
    const openJobs = yield* sql<{ readonly job_id: string; readonly run_id: string; readonly status: string }>`
      SELECT job_id, run_id, status FROM fibergraph.jobs WHERE ${sql.in("run_id", ids)} AND status <> 'done'`
    for (const job of openJobs) fail(`${job.run_id}: job ${job.job_id} is ${job.status}, not done`)

    // No gap in any event log: seq 1..last_seq, each once (the primary key forbids a second one).
    const gaps = yield* sql<{ readonly run_id: string; readonly n: string; readonly lo: string; readonly hi: string; readonly last_seq: string }>`
      SELECT r.run_id, e.n, e.lo, e.hi, r.last_seq
      FROM fibergraph.runs r
      LEFT JOIN (SELECT run_id, count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM fibergraph.events GROUP BY run_id) e
        ON e.run_id = r.run_id
      WHERE ${sql.in("r.run_id", ids)}
        AND (e.n IS DISTINCT FROM r.last_seq OR e.lo IS DISTINCT FROM 1 OR e.hi IS DISTINCT FROM r.last_seq)`
    for (const g of gaps) {
      fail(`${g.run_id}: the event log is not 1..${g.last_seq} (${g.n} events from ${g.lo} to ${g.hi})`)
    }

    // Every step committed once in the log: one StepCommitted per (run, step), one RunCompleted, last.
    const twice = yield* sql<{ readonly run_id: string; readonly step: number; readonly n: string }>`
      SELECT run_id, step, count(*) AS n FROM fibergraph.events
      WHERE ${sql.in("run_id", ids)} AND tag = 'StepCommitted' GROUP BY run_id, step HAVING count(*) <> 1`
    for (const t of twice) fail(`${t.run_id}: step ${t.step} has ${t.n} StepCommitted events`)
    const counts = yield* sql<{ readonly run_id: string; readonly steps: string; readonly completed: string; readonly last_tag: string | null }>`
      SELECT r.run_id,
             (SELECT count(*) FROM fibergraph.events e WHERE e.run_id = r.run_id AND e.tag = 'StepCommitted') AS steps,
             (SELECT count(*) FROM fibergraph.events e WHERE e.run_id = r.run_id AND e.tag = 'RunCompleted') AS completed,
             (SELECT e.tag FROM fibergraph.events e WHERE e.run_id = r.run_id AND e.seq = r.last_seq) AS last_tag
      FROM fibergraph.runs r WHERE ${sql.in("r.run_id", ids)}`
    for (const c of counts) {
      const limit = runs.get(c.run_id)!
      if (Number(c.steps) !== expectedSteps(limit).length) {
        fail(`${c.run_id}: ${c.steps} StepCommitted events, expected ${expectedSteps(limit).length}`)
      }
      if (Number(c.completed) !== 1 || c.last_tag !== "RunCompleted") {
        fail(`${c.run_id}: ${c.completed} RunCompleted events, last event ${c.last_tag}`)
      }
    }

    // Checkpoints: steps increase with sequence; the latest is at the last event and holds the final state.
    const checkpoints = yield* sql<{ readonly run_id: string; readonly seq: string; readonly step: number; readonly state: unknown }>`
      SELECT run_id, seq, step, state FROM fibergraph.checkpoints WHERE ${sql.in("run_id", ids)} ORDER BY run_id, seq`
    const lastSeqs = new Map(
      (yield* sql<{ readonly run_id: string; readonly last_seq: string }>`
        SELECT run_id, last_seq FROM fibergraph.runs WHERE ${sql.in("run_id", ids)}`).map((r) => [r.run_id, Number(r.last_seq)])
    )
    const cpByRun = new Map<string, Array<(typeof checkpoints)[number]>>()
    for (const cp of checkpoints) cpByRun.set(cp.run_id, [...(cpByRun.get(cp.run_id) ?? []), cp])
    for (const [runId, limit] of runs) {
      const cps = cpByRun.get(runId) ?? []
      for (let i = 1; i < cps.length; i++) {
        if (cps[i]!.step <= cps[i - 1]!.step) {
          fail(`${runId}: checkpoint at seq ${cps[i]!.seq} has step ${cps[i]!.step} after step ${cps[i - 1]!.step}`)
        }
      }
      const latest = cps.at(-1)
      if (latest === undefined) {
        fail(`${runId}: no checkpoint`)
        continue
      }
      if (Number(latest.seq) !== lastSeqs.get(runId)) {
        fail(`${runId}: the latest checkpoint is at seq ${latest.seq}, the log at ${lastSeqs.get(runId)}`)
      }
      const state = (typeof latest.state === "string" ? JSON.parse(latest.state) : latest.state) as Record<string, unknown>
      if (state["summary"] !== expectedSummary(limit) || state["rounds"] !== limit) {
        fail(`${runId}: final state ${JSON.stringify({ summary: state["summary"], rounds: state["rounds"] })}`)
      }
    }

    const snap = yield* snapshot

    // The audit trail: per run, a serial chain of claims and commits; every commit by the current claimant.
    const auditByRun = new Map<string, Array<AuditRow>>()
    for (const row of snap.audit) auditByRun.set(row.runId, [...(auditByRun.get(row.runId) ?? []), row])
    const claimsOf = new Map<string, Map<number, string>>()
    let claims = 0
    let reclaims = 0
    let stepCommits = 0
    for (const runId of ids) {
      const rows = auditByRun.get(runId) ?? []
      const epochs = new Map<number, string>()
      claimsOf.set(runId, epochs)
      let holder: { readonly epoch: number; readonly app: string } | undefined
      let completed = false
      let runClaims = 0
      rows.forEach((row, i) => {
        const prev = rows[i - 1]
        if (prev !== undefined && (row.oldLastSeq !== prev.newLastSeq || row.oldStep !== prev.newStep || row.oldEpoch !== prev.newEpoch)) {
          fail(`${runId}: audit row ${row.id} does not follow row ${prev.id} (a lost update)`)
        }
        if (row.kind === "claim") {
          runClaims++
          if (row.newEpoch !== row.oldEpoch + 1 || row.newStep !== row.oldStep || row.newLastSeq !== row.oldLastSeq) {
            fail(`${runId}: claim row ${row.id} changed more than the epoch`)
          }
          holder = { epoch: row.newEpoch, app: row.app }
          epochs.set(row.newEpoch, row.app)
          return
        }
        if (completed) fail(`${runId}: commit row ${row.id} by ${row.app} after the run completed`)
        if (holder === undefined) {
          fail(`${runId}: commit row ${row.id} by ${row.app} before any claim`)
        } else if (row.app !== holder.app || row.newEpoch !== holder.epoch) {
          fail(
            `${runId}: step ${row.oldStep} committed by ${row.app} (epoch ${row.newEpoch}) while ${holder.app} held ` +
              `epoch ${holder.epoch}: a stale write was accepted`
          )
        }
        if (row.newLastSeq <= row.oldLastSeq || (row.newStep !== row.oldStep && row.newStep !== row.oldStep + 1)) {
          fail(`${runId}: commit row ${row.id} moves step ${row.oldStep}→${row.newStep}, seq ${row.oldLastSeq}→${row.newLastSeq}`)
        }
        if (row.newStep === row.oldStep + 1) {
          stepCommits++
          const first = snap.stepCommits.get(runId)?.get(row.oldStep)
          if (first !== undefined && first.id !== row.id) {
            fail(`${runId}: step ${row.oldStep} committed twice (audit rows ${first.id} and ${row.id})`)
          }
        }
        if (row.status === "completed") completed = true
      })
      claims += runClaims
      reclaims += Math.max(0, runClaims - 1)
      const limit = runs.get(runId)!
      const advanced = [...(snap.stepCommits.get(runId)?.keys() ?? [])].sort((a, b) => a - b)
      const expected = expectedSteps(limit).map((_, i) => i)
      if (advanced.join(",") !== expected.join(",")) {
        fail(`${runId}: steps advanced in the audit: ${advanced.join(",")}, expected ${expected.join(",")}`)
      }
    }

    // Side effects: exactly one execution per node instance under the claim that committed its step;
    // others only under earlier claims of the run (which lost it before committing that step).
    const effectsByKey = new Map<string, Array<EffectRow>>()
    for (const row of snap.effects) {
      if (!runs.has(row.runId)) continue
      effectsByKey.set(row.key, [...(effectsByKey.get(row.key) ?? []), row])
    }
    let sideEffects = 0
    let reexecutedInstances = 0
    let extraExecutions = 0
    for (const [runId, limit] of runs) {
      expectedSteps(limit).forEach((instances, step) => {
        const commit = snap.stepCommits.get(runId)?.get(step)
        for (const instance of instances) {
          const key = `${runId}/${step}/${instance}`
          const rows = effectsByKey.get(key) ?? []
          effectsByKey.delete(key)
          sideEffects += rows.length
          if (rows.length > 1) {
            reexecutedInstances++
            extraExecutions += rows.length - 1
          }
          for (const row of rows) {
            if (row.runId !== runId || row.step !== step || `${row.node}/${key.split("/").at(-1)}` !== instance) {
              fail(`${key}: side-effect row names run ${row.runId}, step ${row.step}, node ${row.node}`)
            }
            if (claimsOf.get(runId)?.get(row.epoch) !== row.app) {
              fail(`${key}: executed by ${row.app} under epoch ${row.epoch}, which it never claimed`)
            }
          }
          if (commit === undefined) continue
          const committing = rows.filter((r) => r.epoch === commit.epoch)
          if (committing.length !== 1) {
            fail(`${key}: executed ${committing.length} times under epoch ${commit.epoch}, which committed step ${step}`)
          }
          for (const row of rows) {
            if (row.epoch > commit.epoch) {
              fail(
                `${key}: executed again by ${row.app} under epoch ${row.epoch} after step ${step} was committed ` +
                  `under epoch ${commit.epoch}`
              )
            }
          }
        }
      })
    }
    for (const [key, rows] of effectsByKey) fail(`${key}: ${rows.length} side effects of a node instance the graph has not`)

    // Commit outcomes the workers reported: accepted ones are in the audit under their epoch, stale ones are not.
    const committedBy = new Map<string, AuditRow>()
    for (const row of snap.audit) {
      if (row.kind === "commit") committedBy.set(`${row.runId}#${row.oldStep}#${row.newEpoch}#${row.app}`, row)
    }
    let staleReported = 0
    let defectsReported = 0
    for (const line of lines) {
      const landed = committedBy.get(`${line.runId}#${line.expectedStep}#${line.epoch}#${line.app}`)
      switch (line.outcome) {
        case "ok":
          if (landed === undefined || landed.newStep !== line.step) {
            fail(`${line.runId}: ${line.app}'s commit of step ${line.expectedStep} (epoch ${line.epoch}) returned but is not in the audit`)
          }
          break
        case "stale":
          staleReported++
          if (landed !== undefined) {
            fail(`${line.runId}: ${line.app}'s commit of step ${line.expectedStep} (epoch ${line.epoch}) was reported stale but landed`)
          }
          break
        case "defect":
          defectsReported++
          if (options.allowDefects !== true) fail(`${line.runId}: ${line.app}'s commit died: ${line.detail}`)
          break
        default:
          fail(`${line.runId}: ${line.app}'s commit of step ${line.expectedStep} failed: ${line.outcome}: ${line.detail}`)
      }
    }

    return {
      violations,
      snapshot: snap,
      figures: {
        runs: runs.size,
        claims,
        reclaims,
        stepCommits,
        commitsReported: lines.length,
        staleReported,
        staleCounted: snap.staleCounted,
        defectsReported,
        sideEffects,
        reexecutedInstances,
        extraExecutions
      }
    } satisfies Verdict
  })
