/**
 * The SQL call journal: rows of `fibergraph.call_journal` over `@effect/sql`'s `SqlClient`, shared
 * by server Postgres and the embedded database. A record is one fenced statement: the insert
 * happens only while the run is at the writer's claim epoch.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer } from "effect"
import * as CallJournal from "../../services/CallJournal.js"

interface Row {
  readonly run_id: string
  readonly key: string
  readonly idx: number | string
  readonly step: number | string
  readonly kind: string
  readonly name: string
  readonly request_hash: string
  readonly response: unknown
  readonly usage: unknown
  readonly at: number | string
}

const parseJson = (value: unknown) => typeof value === "string" ? JSON.parse(value) as unknown : value

const entryOf = (row: Row): CallJournal.JournalEntry => ({
  runId: row.run_id,
  key: row.key,
  index: Number(row.idx),
  step: Number(row.step),
  kind: row.kind as CallJournal.CallKind,
  name: row.name,
  requestHash: row.request_hash,
  response: parseJson(row.response),
  usage: (parseJson(row.usage) ?? null) as CallJournal.CallUsage | null,
  at: Number(row.at)
})

/** The driver over `sql`; statement failures are defects (the port's callers cannot act on them). */
export const driver = (sql: SqlClient.SqlClient): CallJournal.Driver => ({
  insert: (e, epoch) =>
    sql<{ readonly idx: number }>`
      INSERT INTO fibergraph.call_journal (run_id, key, idx, step, kind, name, request_hash, response, usage, at)
      SELECT ${e.runId}, ${e.key}, ${e.index}, ${e.step}, ${e.kind}, ${e.name}, ${e.requestHash},
             ${JSON.stringify(e.response ?? null)}::jsonb, ${e.usage === null ? null : JSON.stringify(e.usage)}::jsonb, ${e.at}
      WHERE EXISTS (SELECT 1 FROM fibergraph.runs WHERE run_id = ${e.runId} AND claim_epoch = ${epoch})
      ON CONFLICT (run_id, key, idx) DO NOTHING
      RETURNING idx`.pipe(Effect.map((rows) => rows.length === 1), Effect.orDie),
  find: (runId, key, index) =>
    sql<Row>`SELECT * FROM fibergraph.call_journal WHERE run_id = ${runId} AND key = ${key} AND idx = ${index}`.pipe(
      Effect.map((rows) => rows[0] === undefined ? undefined : entryOf(rows[0])),
      Effect.orDie
    ),
  entries: (runId, key) =>
    sql<Row>`SELECT * FROM fibergraph.call_journal WHERE run_id = ${runId} AND key = ${key} ORDER BY idx`.pipe(
      Effect.map((rows) => rows.map(entryOf)),
      Effect.orDie
    ),
  truncate: (runId, key, fromIndex, epoch) =>
    sql<{ readonly fenced: boolean }>`
      WITH fence AS (SELECT 1 FROM fibergraph.runs WHERE run_id = ${runId} AND claim_epoch = ${epoch}),
           dropped AS (
             DELETE FROM fibergraph.call_journal
             WHERE run_id = ${runId} AND key = ${key} AND idx >= ${fromIndex} AND EXISTS (SELECT 1 FROM fence)
           )
      SELECT EXISTS (SELECT 1 FROM fence) AS fenced`.pipe(Effect.map((rows) => rows[0]?.fenced === true), Effect.orDie),
  prune: (runId, beforeStep) =>
    sql<{ readonly idx: number }>`
      DELETE FROM fibergraph.call_journal WHERE run_id = ${runId} AND step < ${beforeStep}::bigint RETURNING idx`.pipe(
      Effect.map((rows) => rows.length),
      Effect.orDie
    ),
  claim: (runId) =>
    sql<{ readonly claim_epoch: number | string; readonly step: number | string }>`
      SELECT claim_epoch, step FROM fibergraph.runs WHERE run_id = ${runId}`.pipe(
      Effect.map((rows) =>
        rows[0] === undefined ? undefined : { epoch: Number(rows[0].claim_epoch), step: Number(rows[0].step) }
      ),
      Effect.orDie
    )
})

/** The journal over the `SqlClient` in context (the schema must be migrated). */
export const make = Effect.map(SqlClient.SqlClient, (sql) => CallJournal.make(driver(sql)))

/** The journal over the `SqlClient` in context. */
export const layer: Layer.Layer<CallJournal.CallJournal, never, SqlClient.SqlClient> = Layer.effect(CallJournal.CallJournal, make)
