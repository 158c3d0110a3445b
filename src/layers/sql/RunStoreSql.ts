/**
 * The SQL `RunStore`: one implementation over `@effect/sql`'s `SqlClient`, shared by server
 * Postgres and the embedded database. A step commit is a single statement (one round trip, one
 * transaction): the fenced run-row update, the event inserts, the checkpoint insert and the
 * pruning of old checkpoints all take effect together or not at all.
 *
 * Every call is uninterruptible: an interrupt waits for the statement instead of cancelling it,
 * because `@effect/sql-pg`'s cancel can land on another fiber's statement (Effect-TS/effect#8068).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect, Either, Layer, Option, Schedule, Schema } from "effect"
import {
  EventLogCorruptionError,
  formatParseError,
  EventSequenceConflictError,
  RunNotFoundError,
  StaleClaimError
} from "../../Errors.js"
import * as Events from "../../Events.js"
import type { RunEvent } from "../../Events.js"
import { Checkpoint, type RunFilter, RunRecord, RunStore, type StepCommit } from "../../services/RunStore.js"

/** Options of the SQL store. */
export interface Options {
  /** How many checkpoints to keep per run (default 3). */
  readonly retainCheckpoints?: number
}

/** A row of `fibergraph.runs` as the drivers return it (int8 as string or number, jsonb parsed or text). */
export interface RunRow {
  readonly run_id: string
  readonly tenant: string
  readonly graph_id: string
  readonly graph_version: string
  readonly graph_hash: string
  readonly status: string
  readonly step: number | string
  readonly claim_epoch: number | string
  readonly last_seq: number | string
  readonly first_seq: number | string
  readonly config: unknown
  readonly usage: unknown
  readonly wait_until: number | string | null
  readonly parent_run_id: string | null
  readonly forked_from_run_id: string | null
  readonly forked_from_seq: number | string | null
  readonly error: unknown
  readonly created_at: number | string
  readonly updated_at: number | string
}

interface CheckpointRow {
  readonly run_id: string
  readonly seq: number | string
  readonly step: number | string
  readonly state: unknown
  readonly frontier: unknown
  readonly pending: unknown
  readonly interrupts: unknown
  readonly barriers: unknown
  readonly created_at: number | string
}

const decodeRun = Schema.decodeUnknownEither(RunRecord)
const decodeCheckpoint = Schema.decodeUnknownEither(Checkpoint)
const json = (value: unknown) => JSON.stringify(value)
const num = (value: number | string | null) => value === null ? null : Number(value)

const corrupt = (runId: string, detail: string) => new EventLogCorruptionError({ runId, detail })

const parseJson = (value: unknown) => typeof value === "string" ? JSON.parse(value) as unknown : value

const rowFields = (row: RunRow) => ({
  runId: row.run_id,
  tenant: row.tenant,
  graphId: row.graph_id,
  graphVersion: row.graph_version,
  graphHash: row.graph_hash,
  status: row.status,
  step: Number(row.step),
  claimEpoch: Number(row.claim_epoch),
  lastSeq: Number(row.last_seq),
  config: parseJson(row.config),
  usage: parseJson(row.usage),
  waitUntil: num(row.wait_until),
  parentRunId: row.parent_run_id,
  forkedFrom: row.forked_from_run_id === null
    ? null
    : { runId: row.forked_from_run_id, seq: Number(row.forked_from_seq) },
  error: parseJson(row.error) ?? null,
  createdAt: Number(row.created_at),
  updatedAt: Number(row.updated_at)
})

/** A run row decoded into a `RunRecord` (a row that does not decode is corruption). */
export const toRun = (row: RunRow): Either.Either<RunRecord, EventLogCorruptionError> =>
  Either.mapLeft(
    decodeRun(rowFields(row)),
    (e) => corrupt(row.run_id, `the run row does not decode: ${formatParseError(e)}`)
  )

/** The row a step commit just wrote from values this store validated: mapped without decoding (the hot path). */
const toRunWritten = (row: RunRow): RunRecord => rowFields(row) as RunRecord

const toCheckpoint = (row: CheckpointRow): Either.Either<Checkpoint, EventLogCorruptionError> =>
  Either.mapLeft(
    decodeCheckpoint({
      runId: row.run_id,
      seq: Number(row.seq),
      step: Number(row.step),
      state: parseJson(row.state),
      frontier: parseJson(row.frontier),
      pending: parseJson(row.pending),
      interrupts: parseJson(row.interrupts),
      barriers: parseJson(row.barriers),
      createdAt: Number(row.created_at)
    }),
    (e) =>
      corrupt(row.run_id, `checkpoint at sequence ${row.seq} does not decode: ${formatParseError(e)}`)
  )

/**
 * Connection loss, serialization failures, deadlocks and cancelled statements: worth retrying a
 * fenced commit or a claim for. A cancel (57014) can hit a statement nobody interrupted: the
 * driver's `pg_cancel_backend` for an interrupted statement that had already finished lands on
 * the next statement of that pooled connection.
 */
export const isTransient = (error: unknown) => {
  if ((error as { _tag?: string })._tag !== "SqlError") return false
  const cause = (error as SqlError).cause as { readonly code?: unknown } | undefined
  const code = typeof cause?.code === "string" ? cause.code : ""
  const message = cause instanceof Error ? cause.message : ""
  if (code === "" && /Connection terminated|Connection error|connection is closed/i.test(message)) return true
  return code.startsWith("08") || code === "40001" || code === "40P01" || code === "57P01" || code === "57014" ||
    code === "ECONNRESET" || code === "ECONNREFUSED" || code === "EPIPE"
}

/** Full-jitter exponential backoff for transient failures of a commit: 25 ms doubling, capped at 1 s, 5 retries. */
export const transientRetry = Schedule.exponential("25 millis").pipe(
  Schedule.modifyDelay((d) => Duration.millis(Math.min(Duration.toMillis(d), 1000))),
  Schedule.jitteredWith({ min: 0, max: 1 }),
  Schedule.intersect(Schedule.recurs(5))
)

const isUniqueViolation = (error: SqlError) => {
  const cause = error.cause as { readonly code?: unknown } | undefined
  return cause?.code === "23505"
}

/** Builds the store over the `SqlClient` in context (the schema must be migrated). */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const retain = Math.max(1, options.retainCheckpoints ?? 3)

    /** A row that does not decode is a corrupt store: a defect the operator must see, with context. */
    const orCorrupt = <A>(either: Either.Either<A, EventLogCorruptionError>) =>
      Either.isLeft(either) ? Effect.die(either.left) : Effect.succeed(either.right)

    const dieSql = <A, E, R>(effect: Effect.Effect<A, E | SqlError, R>, what: string): Effect.Effect<A, Exclude<E, SqlError>, R> =>
      effect.pipe(
        Effect.catchIf(
          (e): e is Extract<E | SqlError, SqlError> => (e as { _tag?: string })._tag === "SqlError",
          (e) => Effect.die(new Error(`RunStore.${what}: ${(e as SqlError).message}`, { cause: e }))
        )
      ) as Effect.Effect<A, Exclude<E, SqlError>, R>

    const findRun = (runId: string) =>
      Effect.flatMap(
        sql<RunRow>`SELECT * FROM fibergraph.runs WHERE run_id = ${runId}`,
        ([row]) => row === undefined ? Effect.fail(new RunNotFoundError({ runId })) : orCorrupt(toRun(row))
      )

    const insertCheckpoint = (c: Checkpoint) =>
      sql`
        INSERT INTO fibergraph.checkpoints (run_id, seq, step, state, frontier, pending, interrupts, barriers, created_at)
        VALUES (${c.runId}, ${c.seq}, ${c.step}, ${json(c.state)}::jsonb, ${json(c.frontier)}::jsonb,
                ${json(c.pending)}::jsonb, ${json(c.interrupts)}::jsonb, ${json(c.barriers)}::jsonb, ${c.createdAt})`

    const eventsJson = (events: ReadonlyArray<RunEvent>) =>
      json(events.map((e) => ({ seq: e.seq, step: e.step, tag: e._tag, at: e.at, body: Events.encode(e) })))

    const runValues = (run: RunRecord) => ({
      run_id: run.runId,
      tenant: run.tenant,
      graph_id: run.graphId,
      graph_version: run.graphVersion,
      graph_hash: run.graphHash,
      status: run.status,
      step: run.step,
      claim_epoch: run.claimEpoch,
      last_seq: run.lastSeq,
      config: json(run.config),
      usage: json(run.usage),
      deadline_at: run.config.deadline,
      wait_until: run.waitUntil,
      parent_run_id: run.parentRunId,
      forked_from_run_id: run.forkedFrom?.runId ?? null,
      forked_from_seq: run.forkedFrom?.seq ?? null,
      error: run.error === null ? null : json(run.error),
      created_at: run.createdAt,
      updated_at: run.updatedAt
    })

    const insertRunStatement = (run: RunRecord) => {
      const v = runValues(run)
      return sql`
        INSERT INTO fibergraph.runs (run_id, tenant, graph_id, graph_version, graph_hash, status, step, claim_epoch,
          last_seq, first_seq, config, usage, deadline_at, wait_until, parent_run_id, forked_from_run_id, forked_from_seq,
          error, created_at, updated_at)
        VALUES (${v.run_id}, ${v.tenant}, ${v.graph_id}, ${v.graph_version}, ${v.graph_hash}, ${v.status}, ${v.step},
          ${v.claim_epoch}, ${v.last_seq}, 1, ${v.config}::jsonb, ${v.usage}::jsonb, ${v.deadline_at}, ${v.wait_until},
          ${v.parent_run_id}, ${v.forked_from_run_id}, ${v.forked_from_seq}, ${v.error}::jsonb, ${v.created_at},
          ${v.updated_at})
        ON CONFLICT (run_id) DO NOTHING
        RETURNING *`
    }

    const insertRun = (run: RunRecord) => sql<RunRow>`${insertRunStatement(run)}`

    /** One statement: the run row, and only if it was new, its first events and checkpoint. */
    const create: RunStore["Type"]["create"] = (run, events, c) =>
      dieSql(
        Effect.gen(function*() {
          const [inserted] = yield* sql<RunRow>`
            WITH ins AS (${insertRunStatement(run)}),
            ev AS (
              INSERT INTO fibergraph.events (run_id, seq, step, tag, at, body)
              SELECT ${run.runId}, e.seq, e.step, e.tag, e.at, e.body
              FROM jsonb_to_recordset(${eventsJson(events)}::jsonb)
                AS e(seq bigint, step integer, tag text, at bigint, body jsonb)
              WHERE EXISTS (SELECT 1 FROM ins)
            ), cp AS (
              INSERT INTO fibergraph.checkpoints (run_id, seq, step, state, frontier, pending, interrupts, barriers, created_at)
              SELECT ${c.runId}, ${c.seq}, ${c.step}, ${json(c.state)}::jsonb, ${json(c.frontier)}::jsonb,
                     ${json(c.pending)}::jsonb, ${json(c.interrupts)}::jsonb, ${json(c.barriers)}::jsonb, ${c.createdAt}
              WHERE EXISTS (SELECT 1 FROM ins)
            )
            SELECT * FROM ins`
          if (inserted === undefined) return { run: yield* Effect.orDie(findRun(run.runId)), created: false }
          return { run: yield* orCorrupt(toRun(inserted)), created: true }
        }),
        "create"
      )

    /**
     * After a retried commit finds nothing to update: whether an earlier attempt did land (its reply
     * was lost with the connection), which shows as the row already at this commit's position under
     * the same epoch.
     */
    const landed = (c: StepCommit) =>
      Effect.flatMap(findRun(c.runId).pipe(Effect.option), (run) =>
        Effect.succeed(
          Option.isSome(run) && run.value.claimEpoch === c.epoch && run.value.step === c.step &&
            run.value.lastSeq === (c.events[c.events.length - 1]?.seq ?? run.value.lastSeq) &&
            run.value.status === c.status && run.value.updatedAt === c.at
            ? run.value
            : undefined
        ))

    const diagnose = (c: StepCommit, first: number | null) =>
      Effect.flatMap(
        sql<{ readonly claim_epoch: string | number; readonly step: string | number; readonly last_seq: string | number }>`
          SELECT claim_epoch, step, last_seq FROM fibergraph.runs WHERE run_id = ${c.runId}`,
        ([row]): Effect.Effect<never, StaleClaimError | EventSequenceConflictError | RunNotFoundError> => {
          if (row === undefined) return Effect.fail(new RunNotFoundError({ runId: c.runId }))
          const currentEpoch = Number(row.claim_epoch)
          const currentStep = Number(row.step)
          if (currentEpoch !== c.epoch || currentStep !== c.expectedStep) {
            return Effect.fail(
              new StaleClaimError({
                runId: c.runId,
                epoch: c.epoch,
                currentEpoch,
                expectedStep: c.expectedStep,
                currentStep
              })
            )
          }
          return Effect.fail(
            new EventSequenceConflictError({ runId: c.runId, seq: first ?? 0, lastSeq: Number(row.last_seq) })
          )
        }
      )

    const commit: RunStore["Type"]["commit"] = (c) =>
      Effect.suspend(() => {
        const first = c.events.length === 0 ? null : c.events[0]!.seq
        for (let i = 1; i < c.events.length; i++) {
          if (c.events[i]!.seq !== first! + i) {
            return Effect.fail(
              new EventSequenceConflictError({ runId: c.runId, seq: c.events[i]!.seq, lastSeq: first! + i - 1 })
            )
          }
        }
        const cp = c.checkpoint
        const hasCheckpoint = cp !== undefined
        const statement = sql<RunRow>`
          WITH upd AS (
            UPDATE fibergraph.runs
            SET status = ${c.status}, step = ${c.step}, last_seq = last_seq + ${c.events.length},
                usage = ${json(c.usage)}::jsonb, wait_until = ${c.waitUntil},
                error = ${c.error === null ? null : json(c.error)}::jsonb, updated_at = ${c.at},
                graph_version = coalesce(${c.graph?.version ?? null}::text, graph_version),
                graph_hash = coalesce(${c.graph?.hash ?? null}::text, graph_hash)
            WHERE run_id = ${c.runId} AND claim_epoch = ${c.epoch} AND step = ${c.expectedStep}
              AND (${first}::bigint IS NULL OR last_seq = ${first}::bigint - 1)
            RETURNING *
          ), ev AS (
            INSERT INTO fibergraph.events (run_id, seq, step, tag, at, body)
            SELECT ${c.runId}, e.seq, e.step, e.tag, e.at, e.body
            FROM jsonb_to_recordset(${eventsJson(c.events)}::jsonb)
              AS e(seq bigint, step integer, tag text, at bigint, body jsonb)
            WHERE EXISTS (SELECT 1 FROM upd)
          ), cp AS (
            INSERT INTO fibergraph.checkpoints (run_id, seq, step, state, frontier, pending, interrupts, barriers, created_at)
            SELECT ${c.runId}, ${cp?.seq ?? 0}, ${cp?.step ?? 0}, ${json(cp?.state ?? null)}::jsonb,
                   ${json(cp?.frontier ?? [])}::jsonb, ${json(cp?.pending ?? [])}::jsonb,
                   ${json(cp?.interrupts ?? [])}::jsonb, ${json(cp?.barriers ?? {})}::jsonb, ${cp?.createdAt ?? c.at}
            WHERE ${hasCheckpoint}::boolean AND EXISTS (SELECT 1 FROM upd)
          ), pruned AS (
            DELETE FROM fibergraph.checkpoints
            WHERE run_id = ${c.runId} AND ${hasCheckpoint}::boolean AND EXISTS (SELECT 1 FROM upd)
              AND seq NOT IN (
                SELECT seq FROM fibergraph.checkpoints WHERE run_id = ${c.runId} ORDER BY seq DESC LIMIT ${retain - 1}
              )
          )
          SELECT * FROM upd`
        let attempts = 0
        const attempt = Effect.suspend(() => {
          attempts++
          return statement
        })
        return attempt.pipe(
          Effect.retry({ schedule: transientRetry, while: isTransient }),
          Effect.catchIf(isUniqueViolation, () =>
            Effect.fail(new EventSequenceConflictError({ runId: c.runId, seq: first ?? 0, lastSeq: (first ?? 1) - 1 }))),
          Effect.flatMap(([row]) =>
            row !== undefined
              ? Effect.succeed(toRunWritten(row))
              : attempts > 1
              ? landed(c).pipe(Effect.flatMap((run) => run === undefined ? diagnose(c, first) : Effect.succeed(run)))
              : diagnose(c, first)
          ),
          (effect) => dieSql(effect, "commit")
        )
      })

    const events: RunStore["Type"]["events"] = (runId, afterSeq) =>
      dieSql(
        Effect.gen(function*() {
          const [bounds] = yield* sql<{ readonly first_seq: string | number; readonly last_seq: string | number }>`
            SELECT first_seq, last_seq FROM fibergraph.runs WHERE run_id = ${runId}`
          if (bounds === undefined) return yield* Effect.fail(new RunNotFoundError({ runId }))
          const firstSeq = Number(bounds.first_seq)
          const lastSeq = Number(bounds.last_seq)
          if (afterSeq + 1 < firstSeq) {
            return yield* Effect.fail(
              corrupt(runId, `events before sequence ${firstSeq} were compacted; read from a checkpoint instead`)
            )
          }
          const rows = yield* sql<{ readonly seq: string | number; readonly body: unknown }>`
            SELECT seq, body FROM fibergraph.events WHERE run_id = ${runId} AND seq > ${afterSeq} ORDER BY seq`
          const out: Array<RunEvent> = []
          let expected = afterSeq + 1
          for (const row of rows) {
            const seq = Number(row.seq)
            if (seq !== expected) {
              return yield* Effect.fail(corrupt(runId, `the event log has a gap: sequence ${expected} is missing (next is ${seq})`))
            }
            const decoded = yield* Effect.either(Events.decode(parseJson(row.body)))
            if (Either.isLeft(decoded)) {
              return yield* Effect.fail(
                corrupt(runId, `event ${seq} does not decode: ${formatParseError(decoded.left)}`)
              )
            }
            if (decoded.right.seq !== seq || decoded.right.runId !== runId) {
              return yield* Effect.fail(corrupt(runId, `event ${seq} claims to be ${decoded.right.runId}#${decoded.right.seq}`))
            }
            out.push(decoded.right)
            expected++
          }
          if (expected - 1 < lastSeq) {
            return yield* Effect.fail(
              corrupt(runId, `the event log ends at sequence ${expected - 1} but the run has committed up to ${lastSeq} (truncated)`)
            )
          }
          return out
        }),
        "events"
      )

    const exists = (runId: string) =>
      Effect.flatMap(
        sql`SELECT 1 FROM fibergraph.runs WHERE run_id = ${runId}`,
        (rows) => rows.length === 0 ? Effect.fail(new RunNotFoundError({ runId })) : Effect.void
      )

    const latestCheckpoint: RunStore["Type"]["latestCheckpoint"] = (runId) =>
      dieSql(
        Effect.gen(function*() {
          const [row] = yield* sql<CheckpointRow & { readonly found: string }>`
            SELECT r.run_id AS found, c.*
            FROM fibergraph.runs r
            LEFT JOIN LATERAL (
              SELECT * FROM fibergraph.checkpoints c WHERE c.run_id = r.run_id ORDER BY c.seq DESC LIMIT 1
            ) c ON true
            WHERE r.run_id = ${runId}`
          if (row === undefined) return yield* Effect.fail(new RunNotFoundError({ runId }))
          if (row.seq === null) return Option.none()
          const checkpoint = toCheckpoint(row)
          return Either.isLeft(checkpoint) ? yield* Effect.fail(checkpoint.left) : Option.some(checkpoint.right)
        }),
        "latestCheckpoint"
      )

    const checkpoints: RunStore["Type"]["checkpoints"] = (runId) =>
      dieSql(
        Effect.gen(function*() {
          yield* exists(runId)
          const rows = yield* sql<CheckpointRow>`
            SELECT * FROM fibergraph.checkpoints WHERE run_id = ${runId} ORDER BY seq`
          return yield* Effect.forEach(rows, (row) => orCorrupt(toCheckpoint(row)))
        }),
        "checkpoints"
      )

    const list: RunStore["Type"]["list"] = (filter: RunFilter) => {
      const clauses = []
      if (filter.status !== undefined) {
        const statuses = typeof filter.status === "string" ? [filter.status] : filter.status
        clauses.push(statuses.length === 0 ? sql`false` : sql.in("status", statuses))
      }
      if (filter.graphId !== undefined) clauses.push(sql`graph_id = ${filter.graphId}`)
      if (filter.tenant !== undefined) clauses.push(sql`tenant = ${filter.tenant}`)
      if (filter.before !== undefined) {
        clauses.push(sql`(created_at, run_id) < (${filter.before.createdAt}, ${filter.before.runId})`)
      }
      const where = clauses.length === 0 ? sql`` : sql`WHERE ${sql.and(clauses)}`
      const limit = filter.limit === undefined ? sql`` : sql`LIMIT ${filter.limit}`
      return dieSql(
        Effect.flatMap(
          sql<RunRow>`SELECT * FROM fibergraph.runs ${where} ORDER BY created_at DESC, run_id DESC ${limit}`,
          (rows) => Effect.forEach(rows, (row) => orCorrupt(toRun(row)))
        ),
        "list"
      )
    }

    const acquire: RunStore["Type"]["acquire"] = (runId) =>
      dieSql(
        Effect.flatMap(
          sql<RunRow>`UPDATE fibergraph.runs SET claim_epoch = claim_epoch + 1 WHERE run_id = ${runId} RETURNING *`,
          ([row]) => row === undefined ? Effect.fail(new RunNotFoundError({ runId })) : orCorrupt(toRun(row))
        ),
        "acquire"
      )

    const fork: RunStore["Type"]["fork"] = (runId, { at, atSeq, newRunId }) =>
      dieSql(
        sql.withTransaction(Effect.gen(function*() {
          const source = yield* findRun(runId)
          const retained = yield* checkpoints(runId)
          const checkpoint = atSeq === undefined ? retained[retained.length - 1] : retained.find((c) => c.seq === atSeq)
          if (checkpoint === undefined) {
            return yield* Effect.fail(
              corrupt(runId, `no retained checkpoint at sequence ${atSeq}; retained: ${retained.map((c) => c.seq).join(", ")}`)
            )
          }
          const [bounds] = yield* sql<{ readonly first_seq: string | number }>`
            SELECT first_seq FROM fibergraph.runs WHERE run_id = ${runId}`
          if (checkpoint.seq < Number(bounds!.first_seq) - 1) {
            return yield* Effect.fail(corrupt(runId, "history before the checkpoint was compacted"))
          }
          const run: RunRecord = {
            ...source,
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
          const [inserted] = yield* insertRun(run)
          if (inserted === undefined) return yield* Effect.orDie(findRun(newRunId))
          yield* sql`UPDATE fibergraph.runs SET first_seq = ${bounds!.first_seq} WHERE run_id = ${newRunId}`
          yield* sql`
            INSERT INTO fibergraph.events (run_id, seq, step, tag, at, body)
            SELECT ${newRunId}, seq, step, tag, at, jsonb_set(body, '{runId}', to_jsonb(${newRunId}::text))
            FROM fibergraph.events WHERE run_id = ${runId} AND seq <= ${checkpoint.seq}`
          yield* insertCheckpoint({ ...checkpoint, runId: newRunId })
          return yield* orCorrupt(toRun(inserted))
        })),
        "fork"
      )

    const compact: RunStore["Type"]["compact"] = (runId, beforeSeq) =>
      dieSql(
        sql.withTransaction(Effect.gen(function*() {
          const [bounds] = yield* sql<{ readonly first_seq: string | number; readonly oldest: string | number | null }>`
            SELECT r.first_seq, (SELECT min(seq) FROM fibergraph.checkpoints c WHERE c.run_id = r.run_id) AS oldest
            FROM fibergraph.runs r WHERE r.run_id = ${runId} FOR UPDATE`
          if (bounds === undefined) return yield* Effect.fail(new RunNotFoundError({ runId }))
          const firstSeq = Number(bounds.first_seq)
          const upTo = Math.min(beforeSeq - 1, Number(bounds.oldest ?? 0))
          if (upTo < firstSeq) return 0
          const deleted = yield* sql`
            DELETE FROM fibergraph.events WHERE run_id = ${runId} AND seq <= ${upTo} RETURNING seq`
          yield* sql`UPDATE fibergraph.runs SET first_seq = ${upTo + 1} WHERE run_id = ${runId}`
          return deleted.length
        })),
        "compact"
      )

    return RunStore.of({
      create: (run, events, checkpoint) => Effect.uninterruptible(create(run, events, checkpoint)),
      get: (runId) => Effect.uninterruptible(dieSql(findRun(runId), "get")),
      acquire: (runId) => Effect.uninterruptible(acquire(runId)),
      commit: (c) => Effect.uninterruptible(commit(c)),
      events: (runId, afterSeq) => Effect.uninterruptible(events(runId, afterSeq)),
      latestCheckpoint: (runId) => Effect.uninterruptible(latestCheckpoint(runId)),
      checkpoints: (runId) => Effect.uninterruptible(checkpoints(runId)),
      list: (filter) => Effect.uninterruptible(list(filter)),
      fork: (runId, options) => Effect.uninterruptible(fork(runId, options)),
      compact: (runId, beforeSeq) => Effect.uninterruptible(compact(runId, beforeSeq))
    })
  })

/** The SQL store as a layer over the `SqlClient` in context. */
export const layer = (options: Options = {}): Layer.Layer<RunStore, never, SqlClient.SqlClient> =>
  Layer.effect(RunStore, make(options))
