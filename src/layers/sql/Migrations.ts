/**
 * The schema migrations: numbered `.sql` files in `sql/`, applied by `@effect/sql`'s `Migrator`
 * into the `fibergraph` schema, and the check that refuses a database newer than the code.
 */
import { readdir, readFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Schema } from "effect"

/** Where the numbered migration files live. */
export const directory = fileURLToPath(new URL("../../../sql/", import.meta.url))

/** The table recording applied migrations. */
export const table = "fibergraph.migrations"

/** The database's schema version is not the one this code was built for. */
export class SchemaVersionError extends Schema.TaggedError<SchemaVersionError>()("SchemaVersionError", {
  database: Schema.Number,
  code: Schema.Number
}) {
  override get message() {
    return this.database > this.code
      ? `the database schema is at version ${this.database} but this fibergraph only knows up to ${this.code}; ` +
        `upgrade fibergraph (or point it at another database); it will not write to a newer schema`
      : `the database schema is at version ${this.database} but this fibergraph needs ${this.code}; ` +
        `run \`fibergraph migrate\` (or open the store with migrations applied)`
  }
}

const fileName = /^(\d+)_([\w-]+)\.sql$/

/** Reads the migration files: `0001_runs.sql` becomes migration 1, "runs". */
export const loader: Migrator.Loader = Effect.tryPromise({
  try: async () => {
    const files = (await readdir(directory)).filter((f) => fileName.test(f)).sort()
    return Promise.all(files.map(async (file) => {
      const [, id, name] = fileName.exec(file)!
      const text = await readFile(`${directory}${file}`, "utf8")
      const run = Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(text))
      return [Number(id), name!, Effect.succeed(run)] as const
    }))
  },
  catch: (cause) =>
    new Migrator.MigrationError({ reason: "bad-state", message: `cannot read migrations from ${directory}: ${cause}` })
})

/** The highest migration id this code ships. */
export const codeVersion: Effect.Effect<number, Migrator.MigrationError> = Effect.map(
  loader,
  (migrations) => Math.max(0, ...migrations.map(([id]) => id))
)

/** The highest migration id applied to the database (0 for a fresh one). */
export const databaseVersion: Effect.Effect<number, SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const [exists] = yield* sql<{ readonly found: string | null }>`SELECT to_regclass(${table})::text AS found`
  if (exists?.found === null || exists?.found === undefined) return 0
  const [row] = yield* sql<{ readonly version: number | string | null }>`
    SELECT max(migration_id) AS version FROM ${sql(table)}`
  return Number(row?.version ?? 0)
})

/** Creates the `fibergraph` schema and applies every pending migration; refuses a newer database. */
export const migrate: Effect.Effect<
  ReadonlyArray<readonly [number, string]>,
  Migrator.MigrationError | SqlError | SchemaVersionError,
  SqlClient.SqlClient
> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const code = yield* codeVersion
  yield* sql`CREATE SCHEMA IF NOT EXISTS fibergraph`
  const database = yield* databaseVersion
  if (database > code) return yield* Effect.fail(new SchemaVersionError({ database, code }))
  return yield* Migrator.make({})({ loader, table })
})

/** Verifies the database is exactly at this code's schema version, without changing it. */
export const check: Effect.Effect<void, Migrator.MigrationError | SqlError | SchemaVersionError, SqlClient.SqlClient> =
  Effect.gen(function*() {
    const [code, database] = yield* Effect.all([codeVersion, databaseVersion])
    if (database !== code) return yield* Effect.fail(new SchemaVersionError({ database, code }))
  })
