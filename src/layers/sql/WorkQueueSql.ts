/**
 * The SQL `WorkQueue` driver, beside the SQL `RunStore` driver on the same `SqlClient` (the
 * port's rules live in `WorkQueue.make`). A claim is one statement: it picks a job with
 * `FOR UPDATE SKIP LOCKED` (fairly across tenants, a lapsed lease before the tenant's other work,
 * then by priority), bumps its run's claim epoch and leases the job under that epoch; it retries
 * transient failures, cancelled statements among them. Wake-ups use `LISTEN/NOTIFY`.
 */
import { randomUUID } from "node:crypto"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Either, Layer, Option, Schema, Stream } from "effect"
import * as RunStore from "../../services/RunStore.js"
import * as WorkQueue from "../../services/WorkQueue.js"
import { Job } from "../../services/WorkQueue.js"
import { PgliteClient } from "./PgliteClient.js"
import * as RunStoreSql from "./RunStoreSql.js"
import { type RunRow, toRun } from "./RunStoreSql.js"
import * as SqlErrors from "./SqlErrors.js"

/** The notification channel that announces claimable work. */
export const channel = "fibergraph_jobs"

interface JobRow {
  readonly job_id: string
  readonly run_id: string
  readonly tenant: string
  readonly priority: number | string
  readonly status: string
  readonly available_at: number | string
  readonly attempts: number | string
  readonly max_attempts: number | string
  readonly lease_until: number | string | null
  readonly claimed_by: string | null
  readonly claim_epoch: number | string | null
  readonly last_error: string | null
  readonly created_at: number | string
  readonly updated_at: number | string
}

const decodeJob = Schema.decodeUnknownSync(Job)
const nullableNumber = (v: number | string | null) => v === null ? null : Number(v)

const toJob = (row: JobRow): Job =>
  decodeJob({
    jobId: row.job_id,
    runId: row.run_id,
    tenant: row.tenant,
    priority: Number(row.priority),
    status: row.status,
    availableAt: Number(row.available_at),
    attempts: Number(row.attempts),
    maxAttempts: Number(row.max_attempts),
    leaseUntil: nullableNumber(row.lease_until),
    claimedBy: row.claimed_by,
    claimEpoch: nullableNumber(row.claim_epoch),
    lastError: row.last_error,
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at)
  })

const parse = (v: unknown) => typeof v === "string" ? JSON.parse(v) as unknown : v

const columns = {
  status: "status",
  availableAt: "available_at",
  attempts: "attempts",
  leaseUntil: "lease_until",
  claimedBy: "claimed_by",
  lastError: "last_error",
  updatedAt: "updated_at"
} as const satisfies Record<keyof WorkQueue.JobPatch, string>

/** LISTEN for wake-ups through the client that can (server or embedded); none otherwise. */
export const listenerOf = (
  client: { readonly listen?: unknown } | undefined
): ((channel: string) => Stream.Stream<string, unknown>) | undefined =>
  client !== undefined && typeof client.listen === "function"
    ? (client.listen as (channel: string) => Stream.Stream<string, unknown>).bind(client)
    : undefined

/**
 * The driver over `sql`, with `runs` the run store on the same client and `listen` the client's
 * LISTEN (wake-ups are `Stream.never` without one).
 */
export const driver = (
  sql: SqlClient.SqlClient,
  runs: RunStore.RunStore["Type"],
  listen?: (channel: string) => Stream.Stream<string, unknown>
): WorkQueue.Driver => {
  const orDie = (what: string) => SqlErrors.orDie(`WorkQueue.${what}`)

  /** A non-empty payload: node-postgres drops notifications whose payload is empty. */
  const notify = sql`SELECT pg_notify(${channel}, 'job')`

  const insertJob: WorkQueue.Driver["insertJob"] = (job) =>
    Effect.map(
      sql<JobRow>`
        INSERT INTO fibergraph.jobs (job_id, run_id, tenant, priority, status, available_at, max_attempts, created_at, updated_at)
        VALUES (${`job_${randomUUID()}`}, ${job.runId}, ${job.tenant}, ${job.priority}, 'queued',
                ${job.availableAt}, ${job.maxAttempts}, ${job.now}, ${job.now})
        RETURNING *`,
      ([row]) => toJob(row!)
    ).pipe(orDie("insertJob"))

  const claim: WorkQueue.Driver["claim"] = (workerId, { leaseMillis, now }) =>
    Effect.map(
      sql<{ readonly job: unknown; readonly run: unknown }>`
        WITH candidate AS (
          SELECT j.job_id, j.run_id, j.tenant
          FROM fibergraph.jobs j
          WHERE ((j.status = 'queued' AND j.available_at <= ${now}) OR (j.status = 'claimed' AND j.lease_until < ${now}))
            AND NOT EXISTS (
              SELECT 1 FROM fibergraph.jobs o
              WHERE o.run_id = j.run_id AND o.job_id <> j.job_id AND o.status = 'claimed' AND o.lease_until >= ${now}
            )
          ORDER BY
            (SELECT count(*) FROM fibergraph.jobs t
             WHERE t.tenant = j.tenant AND t.status = 'claimed' AND t.lease_until >= ${now}),
            (SELECT last_claim FROM fibergraph.tenant_claims tc WHERE tc.tenant = j.tenant) NULLS FIRST,
            (j.status = 'claimed') DESC,
            j.priority DESC, j.available_at, j.created_at, j.seq
          LIMIT 1
          FOR UPDATE OF j SKIP LOCKED
        ), run AS (
          UPDATE fibergraph.runs r SET claim_epoch = r.claim_epoch + 1
          FROM candidate c WHERE r.run_id = c.run_id
          RETURNING r.*
        ), job AS (
          UPDATE fibergraph.jobs j
          SET status = 'claimed', claimed_by = ${workerId}, lease_until = ${now + leaseMillis},
              attempts = CASE WHEN j.status = 'queued' THEN j.attempts + 1 ELSE j.attempts END,
              claim_epoch = run.claim_epoch, updated_at = ${now}
          FROM candidate c, run WHERE j.job_id = c.job_id
          RETURNING j.*
        ), turn AS (
          INSERT INTO fibergraph.tenant_claims (tenant, last_claim)
          SELECT c.tenant, nextval('fibergraph.claim_seq') FROM candidate c
          ON CONFLICT (tenant) DO UPDATE SET last_claim = excluded.last_claim
        )
        SELECT row_to_json(job.*) AS job, row_to_json(run.*) AS run FROM job, run`.pipe(
        Effect.retry({ schedule: SqlErrors.transientRetry, while: SqlErrors.isTransient })
      ),
      ([row]) =>
        row === undefined
          ? undefined
          : { job: toJob(parse(row.job) as JobRow), run: Either.getOrThrow(toRun(parse(row.run) as RunRow)) }
    ).pipe(orDie("claim"))

  const update: WorkQueue.Driver["update"] = (c, patch, { live, now }) => {
    const set: Record<string, unknown> = {}
    for (const [field, value] of Object.entries(patch)) set[columns[field as keyof WorkQueue.JobPatch]] = value
    return Effect.map(
      sql<JobRow>`
        UPDATE fibergraph.jobs SET ${sql.update(set)}
        WHERE job_id = ${c.job.jobId} AND status = 'claimed' AND claim_epoch = ${c.epoch}
          AND EXISTS (SELECT 1 FROM fibergraph.runs WHERE run_id = ${c.job.runId} AND claim_epoch = ${c.epoch})
          AND (NOT ${live}::boolean OR lease_until >= ${now})
        RETURNING *`,
      ([row]) => row === undefined ? undefined : toJob(row)
    ).pipe(orDie("update"))
  }

  return {
    runs,
    atomically: (effect) => orDie("submit")(sql.withTransaction(effect)),
    runByKey: (tenant, key) =>
      Effect.map(
        sql<{ readonly run_id: string }>`
          SELECT run_id FROM fibergraph.runs WHERE tenant = ${tenant} AND idempotency_key = ${key}`,
        ([row]) => row?.run_id
      ).pipe(orDie("submit")),
    setKey: (runId, _tenant, key) =>
      Effect.asVoid(sql`UPDATE fibergraph.runs SET idempotency_key = ${key} WHERE run_id = ${runId}`).pipe(orDie("submit")),
    insertJob,
    firstJob: (runId) =>
      Effect.map(
        sql<JobRow>`SELECT * FROM fibergraph.jobs WHERE run_id = ${runId} ORDER BY created_at, seq LIMIT 1`,
        ([row]) => row === undefined ? undefined : toJob(row)
      ).pipe(orDie("submit")),
    claim,
    update,
    get: (jobId) =>
      Effect.map(
        sql<JobRow>`SELECT * FROM fibergraph.jobs WHERE job_id = ${jobId}`,
        ([row]) => row === undefined ? undefined : toJob(row)
      ).pipe(orDie("get")),
    jobsOf: (runId) =>
      Effect.map(
        sql<JobRow>`SELECT * FROM fibergraph.jobs WHERE run_id = ${runId} ORDER BY created_at, seq`,
        (rows) => rows.map(toJob)
      ).pipe(orDie("jobsOf")),
    depth: (now) =>
      Effect.map(
        sql<{ readonly queued: string; readonly ready: string; readonly claimed: string; readonly dead: string }>`
          SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                 count(*) FILTER (WHERE status = 'queued' AND available_at <= ${now}) AS ready,
                 count(*) FILTER (WHERE status = 'claimed') AS claimed,
                 count(*) FILTER (WHERE status = 'dead') AS dead
          FROM fibergraph.jobs`,
        ([row]) => ({
          queued: Number(row!.queued),
          ready: Number(row!.ready),
          claimed: Number(row!.claimed),
          dead: Number(row!.dead)
        })
      ).pipe(orDie("depth")),
    notify: Effect.asVoid(notify).pipe(orDie("notify")),
    wakeups: listen === undefined ? Stream.never : Stream.map(Stream.orDie(listen(channel)), () => undefined)
  }
}

/** The `PgClient` or `PgliteClient` in context, whichever can LISTEN. */
export const listener = Effect.map(
  Effect.all([Effect.serviceOption(PgClient.PgClient), Effect.serviceOption(PgliteClient)]),
  ([pg, pglite]) => listenerOf(Option.getOrUndefined(pg) ?? Option.getOrUndefined(pglite))
)

/**
 * Builds the queue over the `SqlClient` in context (migrated), with its own SQL run store on the
 * same client and LISTEN wake-ups when the client is a `PgClient` or `PgliteClient`.
 */
export const make: Effect.Effect<WorkQueue.WorkQueue["Type"], never, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const runs = RunStore.make(RunStoreSql.driver(sql))
  return WorkQueue.make(driver(sql, runs, yield* listener))
})

/** The SQL queue as a layer over the `SqlClient` in context (a queue needs its own backend's runs). */
export const layer: Layer.Layer<WorkQueue.WorkQueue, never, SqlClient.SqlClient> = Layer.effect(
  WorkQueue.WorkQueue,
  make
)
