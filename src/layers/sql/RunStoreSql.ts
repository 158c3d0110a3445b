/**
 * The SQL `RunStore` driver: rows of `fibergraph.runs`, `events` and `checkpoints` over
 * `@effect/sql`'s `SqlClient`, shared by server Postgres and the embedded database. The port's
 * rules live in `RunStore.make`. A step commit is a single statement (one round trip, one
 * transaction): the fenced run-row update, the event inserts, the checkpoint insert and the
 * pruning of old checkpoints all take effect together or not at all.
 */
import type * as Statement from "@effect/sql/Statement"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Either, Layer, Option, Schema } from "effect"
import { EventLogCorruptionError, formatParseError } from "../../Errors.js"
import * as Events from "../../Events.js"
import type { RunEvent } from "../../Events.js"
import { Checkpoint, RunRecord } from "../../Run.js"
import * as RunStore from "../../services/RunStore.js"
import type { StepCommit } from "../../services/RunStore.js"
import * as SqlErrors from "./SqlErrors.js"

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

/** Connection loss, conflicts, cancelled statements: see `SqlErrors.isTransient`. */
export const isTransient = SqlErrors.isTransient

/** The retry policy of transient failures: see `SqlErrors.transientRetry`. */
export const transientRetry = SqlErrors.transientRetry

/** A row that does not decode is a corrupt store. */
const decoded = <A>(either: Either.Either<A, EventLogCorruptionError>) =>
  Either.isLeft(either) ? Effect.fail(either.left) : Effect.succeed(either.right)

/** The driver over `sql` (the schema must be migrated). */
export const driver = (sql: SqlClient.SqlClient, options: Options = {}): RunStore.Driver => {
  const retain = Math.max(1, options.retainCheckpoints ?? 3)
  const orDie = (what: string) => SqlErrors.orDie(`RunStore.${what}`)

  const findRun = (runId: string) =>
    Effect.flatMap(
      sql<RunRow>`SELECT * FROM fibergraph.runs WHERE run_id = ${runId}`,
      ([row]) => row === undefined ? Effect.succeed(undefined) : decoded(toRun(row))
    )

  const eventsJson = (events: ReadonlyArray<RunEvent>) =>
    json(events.map((e) => ({ seq: e.seq, step: e.step, tag: e._tag, at: e.at, body: Events.encode(e) })))

  /** Inserts `events` of `runId` where `guard` holds. */
  const insertEvents = (runId: string, events: ReadonlyArray<RunEvent>, guard: Statement.Fragment) =>
    sql`
      INSERT INTO fibergraph.events (run_id, seq, step, tag, at, body)
      SELECT ${runId}, e.seq, e.step, e.tag, e.at, e.body
      FROM jsonb_to_recordset(${eventsJson(events)}::jsonb)
        AS e(seq bigint, step integer, tag text, at bigint, body jsonb)
      WHERE ${guard}`

  /** Inserts checkpoint `c` where `guard` holds. */
  const insertCheckpoint = (c: Checkpoint, guard: Statement.Fragment) =>
    sql`
      INSERT INTO fibergraph.checkpoints (run_id, seq, step, state, frontier, pending, interrupts, barriers, created_at)
      SELECT ${c.runId}, ${c.seq}, ${c.step}, ${json(c.state)}::jsonb, ${json(c.frontier)}::jsonb,
             ${json(c.pending)}::jsonb, ${json(c.interrupts)}::jsonb, ${json(c.barriers)}::jsonb, ${c.createdAt}
      WHERE ${guard}`

  const always = sql`true`

  const insertRun = (run: RunRecord, firstSeq = 1) =>
    sql`
      INSERT INTO fibergraph.runs (run_id, tenant, graph_id, graph_version, graph_hash, status, step, claim_epoch,
        last_seq, first_seq, config, usage, deadline_at, wait_until, parent_run_id, forked_from_run_id, forked_from_seq,
        error, created_at, updated_at)
      VALUES (${run.runId}, ${run.tenant}, ${run.graphId}, ${run.graphVersion}, ${run.graphHash}, ${run.status},
        ${run.step}, ${run.claimEpoch}, ${run.lastSeq}, ${firstSeq}, ${json(run.config)}::jsonb,
        ${json(run.usage)}::jsonb, ${run.config.deadline}, ${run.waitUntil}, ${run.parentRunId},
        ${run.forkedFrom?.runId ?? null}, ${run.forkedFrom?.seq ?? null},
        ${run.error === null ? null : json(run.error)}::jsonb, ${run.createdAt}, ${run.updatedAt})
      ON CONFLICT (run_id) DO NOTHING
      RETURNING *`

  const inserted = sql`EXISTS (SELECT 1 FROM ins)`

  /** One statement: the run row, and only if it was new, its first events and checkpoint. */
  const insert: RunStore.Driver["insert"] = (run, events, c) =>
    Effect.flatMap(
      sql<RunRow>`
        WITH ins AS (${insertRun(run)}),
        ev AS (${insertEvents(run.runId, events, inserted)}),
        cp AS (${insertCheckpoint(c, inserted)})
        SELECT * FROM ins`,
      ([row]) => row === undefined ? Effect.succeed(undefined) : decoded(toRun(row))
    ).pipe(orDie("create"))

  /**
   * After a retried commit finds nothing to update: whether an earlier attempt did land (its reply
   * was lost with the connection), which shows as the row already at this commit's position under
   * the same epoch.
   */
  const landed = (c: StepCommit) =>
    Effect.map(Effect.either(findRun(c.runId)), (found) => {
      const run = Either.getOrUndefined(found)
      return run !== undefined && run.claimEpoch === c.epoch && run.step === c.step &&
          run.lastSeq === (c.events[c.events.length - 1]?.seq ?? run.lastSeq) &&
          run.status === c.status && run.updatedAt === c.at
        ? run
        : undefined
    })

  const updated = sql`EXISTS (SELECT 1 FROM upd)`

  const commit: RunStore.Driver["commit"] = (c) => {
    const first = c.events.length === 0 ? null : c.events[0]!.seq
    const cp = c.checkpoint
    const checkpointing = cp === undefined
      ? sql``
      : sql`, cp AS (${insertCheckpoint(cp, updated)}),
          pruned AS (
            DELETE FROM fibergraph.checkpoints
            WHERE run_id = ${c.runId} AND ${updated}
              AND seq NOT IN (
                SELECT seq FROM fibergraph.checkpoints WHERE run_id = ${c.runId} ORDER BY seq DESC LIMIT ${retain - 1}
              )
          )`
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
      ), ev AS (${insertEvents(c.runId, c.events, updated)})${checkpointing}
      SELECT * FROM upd`
    let attempts = 0
    return Effect.suspend(() => {
      attempts++
      return statement
    }).pipe(
      Effect.retry({ schedule: SqlErrors.transientRetry, while: SqlErrors.isTransient }),
      Effect.map(([row]) => row),
      Effect.catchIf(SqlErrors.isUniqueViolation, () => Effect.succeed(undefined)),
      Effect.flatMap((row) =>
        row !== undefined
          ? Effect.succeed(toRunWritten(row))
          : attempts > 1
          ? landed(c)
          : Effect.succeed(undefined)
      ),
      orDie("commit")
    )
  }

  const events: RunStore.Driver["events"] = (runId, afterSeq) =>
    Effect.gen(function*() {
      const [bounds] = yield* sql<{ readonly first_seq: string | number; readonly last_seq: string | number }>`
        SELECT first_seq, last_seq FROM fibergraph.runs WHERE run_id = ${runId}`
      if (bounds === undefined) return undefined
      const rows = yield* sql<{ readonly seq: string | number; readonly body: unknown }>`
        SELECT seq, body FROM fibergraph.events WHERE run_id = ${runId} AND seq > ${afterSeq} ORDER BY seq`
      const out: Array<RunEvent> = []
      for (const row of rows) {
        const event = yield* Effect.either(Events.decode(parseJson(row.body)))
        if (Either.isLeft(event)) {
          return yield* corrupt(runId, `event ${row.seq} does not decode: ${formatParseError(event.left)}`)
        }
        if (event.right.seq !== Number(row.seq)) {
          return yield* corrupt(runId, `event ${row.seq} claims to be ${event.right.runId}#${event.right.seq}`)
        }
        out.push(event.right)
      }
      return { firstSeq: Number(bounds.first_seq), lastSeq: Number(bounds.last_seq), events: out }
    }).pipe(orDie("events"))

  const latestCheckpoint: RunStore.Driver["latestCheckpoint"] = (runId) =>
    Effect.gen(function*() {
      const [row] = yield* sql<CheckpointRow & { readonly found: string }>`
        SELECT r.run_id AS found, c.*
        FROM fibergraph.runs r
        LEFT JOIN LATERAL (
          SELECT * FROM fibergraph.checkpoints c WHERE c.run_id = r.run_id ORDER BY c.seq DESC LIMIT 1
        ) c ON true
        WHERE r.run_id = ${runId}`
      if (row === undefined) return undefined
      if (row.seq === null) return Option.none()
      return Option.some(yield* decoded(toCheckpoint(row)))
    }).pipe(orDie("latestCheckpoint"))

  const checkpoints: RunStore.Driver["checkpoints"] = (runId) =>
    Effect.gen(function*() {
      const exists = yield* sql`SELECT 1 FROM fibergraph.runs WHERE run_id = ${runId}`
      if (exists.length === 0) return undefined
      const rows = yield* sql<CheckpointRow>`
        SELECT * FROM fibergraph.checkpoints WHERE run_id = ${runId} ORDER BY seq`
      return yield* Effect.forEach(rows, (row) => decoded(toCheckpoint(row)))
    }).pipe(orDie("checkpoints"))

  const list: RunStore.Driver["list"] = (filter) => {
    const clauses = []
    if (filter.status !== undefined) {
      clauses.push(filter.status.length === 0 ? sql`false` : sql.in("status", filter.status))
    }
    if (filter.graphId !== undefined) clauses.push(sql`graph_id = ${filter.graphId}`)
    if (filter.tenant !== undefined) clauses.push(sql`tenant = ${filter.tenant}`)
    if (filter.before !== undefined) {
      clauses.push(sql`(created_at, run_id) < (${filter.before.createdAt}, ${filter.before.runId})`)
    }
    const where = clauses.length === 0 ? sql`` : sql`WHERE ${sql.and(clauses)}`
    const limit = filter.limit === undefined ? sql`` : sql`LIMIT ${filter.limit}`
    return Effect.flatMap(
      sql<RunRow>`SELECT * FROM fibergraph.runs ${where} ORDER BY created_at DESC, run_id DESC ${limit}`,
      (rows) => Effect.forEach(rows, (row) => decoded(toRun(row)))
    ).pipe(orDie("list"))
  }

  const acquire: RunStore.Driver["acquire"] = (runId) =>
    Effect.flatMap(
      sql<RunRow>`UPDATE fibergraph.runs SET claim_epoch = claim_epoch + 1 WHERE run_id = ${runId} RETURNING *`,
      ([row]) => row === undefined ? Effect.succeed(undefined) : decoded(toRun(row))
    ).pipe(orDie("acquire"))

  const insertFork: RunStore.Driver["insertFork"] = ({ checkpoint, firstSeq, run, sourceRunId }) =>
    Effect.gen(function*() {
      const [row] = yield* sql<RunRow>`${insertRun(run, firstSeq)}`
      if (row === undefined) return undefined
      yield* sql`
        INSERT INTO fibergraph.events (run_id, seq, step, tag, at, body)
        SELECT ${run.runId}, seq, step, tag, at, jsonb_set(body, '{runId}', to_jsonb(${run.runId}::text))
        FROM fibergraph.events WHERE run_id = ${sourceRunId} AND seq <= ${checkpoint.seq}`
      yield* insertCheckpoint(checkpoint, always)
      return yield* decoded(toRun(row))
    }).pipe(orDie("fork"))

  const dropEvents: RunStore.Driver["dropEvents"] = (runId, upToSeq) =>
    Effect.gen(function*() {
      const deleted = yield* sql`DELETE FROM fibergraph.events WHERE run_id = ${runId} AND seq <= ${upToSeq} RETURNING seq`
      yield* sql`UPDATE fibergraph.runs SET first_seq = ${upToSeq + 1} WHERE run_id = ${runId}`
      return deleted.length
    }).pipe(orDie("compact"))

  return {
    insert,
    get: (runId) => orDie("get")(findRun(runId)),
    acquire,
    commit,
    events,
    latestCheckpoint,
    checkpoints,
    list,
    insertFork,
    dropEvents,
    atomically: (effect) => orDie("transaction")(sql.withTransaction(effect))
  }
}

/** Builds the store over the `SqlClient` in context (the schema must be migrated). */
export const make = (options: Options = {}) =>
  Effect.map(SqlClient.SqlClient, (sql) => RunStore.make(driver(sql, options)))

/** The SQL store as a layer over the `SqlClient` in context. */
export const layer = (options: Options = {}): Layer.Layer<RunStore.RunStore, never, SqlClient.SqlClient> =>
  Layer.effect(RunStore.RunStore, make(options))
