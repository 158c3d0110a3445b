/**
 * The SQL `WorkQueue`, beside the SQL `RunStore` on the same database. A claim is one statement:
 * it picks a job with `FOR UPDATE SKIP LOCKED` (fairly across tenants, then by priority), bumps
 * its run's claim epoch and leases the job under that epoch. Wake-ups use `LISTEN/NOTIFY`.
 * A lapsed lease is taken over before newer work of its tenant and without using an attempt.
 * Every call is uninterruptible, like the SQL `RunStore`'s (an interrupt's cancel can hit another
 * fiber's statement); a claim retries transient failures, cancelled statements among them.
 */
import { randomUUID } from "node:crypto"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Either, Layer, Option, Schema, Stream } from "effect"
import { RunStore } from "../../services/RunStore.js"
import { type Claim, Job, LeaseLostError, WorkQueue } from "../../services/WorkQueue.js"
import { PgliteClient } from "./PgliteClient.js"
import { isTransient, type RunRow, toRun, transientRetry } from "./RunStoreSql.js"

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

/** `f`, with every call uninterruptible. */
const uninterruptible = <Args extends ReadonlyArray<unknown>, A, E, R>(f: (...args: Args) => Effect.Effect<A, E, R>) =>
(...args: Args) => Effect.uninterruptible(f(...args))

const parse = (v: unknown) => typeof v === "string" ? JSON.parse(v) as unknown : v

/** Builds the queue over the `SqlClient` and `RunStore` in context (both on the migrated database). */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const store = yield* RunStore
  const pg = yield* Effect.serviceOption(PgClient.PgClient)
  const pglite = yield* Effect.serviceOption(PgliteClient)

  const orDie = <A, E, R>(effect: Effect.Effect<A, E | SqlError, R>, what: string) =>
    effect.pipe(
      Effect.catchIf(
        (e): e is Extract<E | SqlError, SqlError> => (e as { _tag?: string })._tag === "SqlError",
        (e) => Effect.die(new Error(`WorkQueue.${what}: ${(e as SqlError).message}`, { cause: e }))
      )
    ) as Effect.Effect<A, Exclude<E, SqlError>, R>

  /** A non-empty payload: node-postgres drops notifications whose payload is empty. */
  const notify = sql`SELECT pg_notify(${channel}, 'job')`

  const newJobId = () => `job_${randomUUID()}`

  const insertJob = (runId: string, tenant: string, now: number, options: {
    readonly availableAt?: number | undefined
    readonly priority?: number | undefined
    readonly maxAttempts?: number | undefined
  }) =>
    Effect.flatMap(
      sql<JobRow>`
        INSERT INTO fibergraph.jobs (job_id, run_id, tenant, priority, status, available_at, max_attempts, created_at, updated_at)
        VALUES (${newJobId()}, ${runId}, ${tenant}, ${options.priority ?? 0}, 'queued',
                ${options.availableAt ?? now}, ${options.maxAttempts ?? 10}, ${now}, ${now})
        RETURNING *`,
      ([row]) => Effect.zipRight(notify, Effect.succeed(toJob(row!)))
    )

  const firstJob = (runId: string) =>
    Effect.map(
      sql<JobRow>`SELECT * FROM fibergraph.jobs WHERE run_id = ${runId} ORDER BY created_at, seq LIMIT 1`,
      ([row]) => toJob(row!)
    )

  const byKey = (tenant: string, key: string) =>
    sql<{ readonly run_id: string }>`
      SELECT run_id FROM fibergraph.runs WHERE tenant = ${tenant} AND idempotency_key = ${key}`

  const submit: WorkQueue["Type"]["submit"] = (run, events, checkpoint, options = {}) =>
    orDie(
      sql.withTransaction(Effect.gen(function*() {
        if (options.idempotencyKey !== undefined) {
          const [existing] = yield* byKey(run.tenant, options.idempotencyKey)
          if (existing !== undefined) {
            const stored = yield* Effect.orDie(store.get(existing.run_id))
            return { run: stored, job: yield* firstJob(existing.run_id), created: false }
          }
        }
        const created = yield* store.create(run, events, checkpoint)
        if (!created.created) return { run: created.run, job: yield* firstJob(run.runId), created: false }
        if (options.idempotencyKey !== undefined) {
          yield* sql`UPDATE fibergraph.runs SET idempotency_key = ${options.idempotencyKey} WHERE run_id = ${run.runId}`
        }
        const job = yield* insertJob(run.runId, run.tenant, run.createdAt, options)
        return { run: created.run, job, created: true }
      })),
      "submit"
    )

  const enqueue: WorkQueue["Type"]["enqueue"] = (runId, { availableAt, now, priority }) =>
    orDie(
      Effect.flatMap(
        sql<{ readonly tenant: string }>`SELECT tenant FROM fibergraph.runs WHERE run_id = ${runId}`,
        ([row]) =>
          row === undefined
            ? Effect.die(new Error(`WorkQueue.enqueue: run ${runId} does not exist`))
            : insertJob(runId, row.tenant, now, { availableAt, priority })
      ),
      "enqueue"
    )

  const claim: WorkQueue["Type"]["claim"] = (workerId, { leaseMillis, now }) =>
    orDie(
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
          Effect.retry({ schedule: transientRetry, while: isTransient })
        ),
        ([row]): Option.Option<Claim> => {
          if (row === undefined) return Option.none()
          const job = toJob(parse(row.job) as JobRow)
          const run = Either.getOrThrow(toRun(parse(row.run) as RunRow))
          return Option.some({ job, run, epoch: run.claimEpoch, leaseUntil: job.leaseUntil ?? now + leaseMillis })
        }
      ),
      "claim"
    )

  const lost = (c: Claim, detail: string) =>
    new LeaseLostError({ jobId: c.job.jobId, runId: c.job.runId, epoch: c.epoch, detail })

  /** Why a claim-guarded update touched nothing. */
  const why = (c: Claim, now: number) =>
    Effect.flatMap(
      sql<JobRow>`SELECT * FROM fibergraph.jobs WHERE job_id = ${c.job.jobId}`,
      ([row]) => {
        if (row === undefined) return Effect.fail(lost(c, "the job no longer exists"))
        const job = toJob(row)
        if (job.claimEpoch !== c.epoch) {
          return Effect.fail(lost(c, `the job was claimed again (epoch ${job.claimEpoch}, by ${job.claimedBy})`))
        }
        if (job.status !== "claimed") return Effect.fail(lost(c, `the job is ${job.status}`))
        if (job.leaseUntil !== null && job.leaseUntil < now) {
          return Effect.fail(lost(c, `the lease expired at ${new Date(job.leaseUntil).toISOString()}`))
        }
        return Effect.fail(lost(c, "the run was claimed by another owner"))
      }
    )

  const guarded = <A>(
    c: Claim,
    now: number,
    what: string,
    statement: Effect.Effect<ReadonlyArray<A>, SqlError>
  ) =>
    orDie(
      Effect.flatMap(statement, (rows) => rows.length === 0 ? why(c, now) : Effect.succeed(rows[0]!)),
      what
    )

  const owned = (c: Claim) =>
    sql`job_id = ${c.job.jobId} AND status = 'claimed' AND claim_epoch = ${c.epoch}
        AND EXISTS (SELECT 1 FROM fibergraph.runs WHERE run_id = ${c.job.runId} AND claim_epoch = ${c.epoch})`

  return WorkQueue.of({
    submit: uninterruptible(submit),
    enqueue: uninterruptible(enqueue),
    claim: uninterruptible(claim),
    heartbeat: uninterruptible((c, { leaseMillis, now }) =>
      Effect.map(
        guarded(
          c,
          now,
          "heartbeat",
          sql<{ readonly lease_until: number | string }>`
            UPDATE fibergraph.jobs SET lease_until = ${now + leaseMillis}, updated_at = ${now}
            WHERE ${owned(c)} AND lease_until >= ${now}
            RETURNING lease_until`
        ),
        (row) => Number(row.lease_until)
      )),
    complete: uninterruptible((c, { now }) =>
      Effect.asVoid(guarded(
        c,
        now,
        "complete",
        sql`UPDATE fibergraph.jobs SET status = 'done', lease_until = NULL, updated_at = ${now}
            WHERE ${owned(c)} RETURNING job_id`
      ))),
    release: uninterruptible((c, { now }) =>
      Effect.asVoid(guarded(
        c,
        now,
        "release",
        sql`UPDATE fibergraph.jobs SET status = 'queued', lease_until = NULL, claimed_by = NULL,
              available_at = ${now}, attempts = greatest(attempts - 1, 0), updated_at = ${now}
            WHERE ${owned(c)} RETURNING job_id`
      ).pipe(Effect.zipLeft(orDie(notify, "release"))))),
    retryLater: uninterruptible((c, { delayMillis, error, now }) =>
      Effect.map(
        guarded(
          c,
          now,
          "retryLater",
          sql<JobRow>`
            UPDATE fibergraph.jobs
            SET status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                available_at = ${now + delayMillis}, lease_until = NULL, claimed_by = NULL,
                last_error = ${error}, updated_at = ${now}
            WHERE ${owned(c)} RETURNING *`
        ),
        toJob
      )),
    deadLetter: uninterruptible((c, { error, now }) =>
      Effect.asVoid(guarded(
        c,
        now,
        "deadLetter",
        sql`UPDATE fibergraph.jobs SET status = 'dead', lease_until = NULL, last_error = ${error}, updated_at = ${now}
            WHERE ${owned(c)} RETURNING job_id`
      ))),
    get: uninterruptible((jobId) =>
      orDie(
        Effect.map(sql<JobRow>`SELECT * FROM fibergraph.jobs WHERE job_id = ${jobId}`, ([row]) =>
          row === undefined ? Option.none() : Option.some(toJob(row))),
        "get"
      )),
    jobsOf: uninterruptible((runId) =>
      orDie(
        Effect.map(
          sql<JobRow>`SELECT * FROM fibergraph.jobs WHERE run_id = ${runId} ORDER BY created_at, seq`,
          (rows) => rows.map(toJob)
        ),
        "jobsOf"
      )),
    depth: uninterruptible((now) =>
      orDie(
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
        ),
        "depth"
      )),
    wakeups: Option.isSome(pg)
      ? Stream.map(Stream.orDie(pg.value.listen(channel)), () => undefined)
      : Option.isSome(pglite)
      ? Stream.map(Stream.orDie(pglite.value.listen(channel)), () => undefined)
      : Stream.never
  })
})

/** The SQL queue as a layer (beside `RunStoreSql.layer` on the same `SqlClient`). */
export const layer: Layer.Layer<WorkQueue, never, SqlClient.SqlClient | RunStore> = Layer.effect(WorkQueue, make)
