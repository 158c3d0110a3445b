/**
 * Test support for the Postgres server: the server from `DATABASE_URL` (default the local test
 * server), a fresh database per suite (dropped afterwards), and one clear line when no server is
 * reachable (tests are then skipped, unless `FIBERGRAPH_REQUIRE_POSTGRES=1`, as in CI).
 */
import { randomUUID } from "node:crypto"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Reactivity from "@effect/experimental/Reactivity"
import { Cause, Effect, Exit, Layer, Redacted } from "effect"
import * as Migrations from "../../src/layers/sql/Migrations.js"

/** The server the suites use. */
export const serverUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/test"

/** Whether a missing server fails the suites instead of skipping them. */
export const required = process.env["FIBERGRAPH_REQUIRE_POSTGRES"] === "1"

const probe = Effect.gen(function*() {
  const sql = yield* PgClient.make({ url: Redacted.make(serverUrl), maxConnections: 1, connectTimeout: "3 seconds" })
  yield* sql`SELECT 1`
}).pipe(Effect.scoped, Effect.provide(Reactivity.layer), Effect.timeout("5 seconds"))

const exit = await Effect.runPromiseExit(probe)
const problem = Exit.isSuccess(exit) ? undefined : Cause.pretty(exit.cause).split("\n")[0]
if (problem !== undefined && !required) {
  console.warn(`[fibergraph] Postgres server at ${redact(serverUrl)} unreachable (${problem}): server suites skipped`)
}

/** Whether the server suites run (a missing server with FIBERGRAPH_REQUIRE_POSTGRES=1 makes them run and fail). */
export const available = problem === undefined || required

function redact(url: string) {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@")
}

/** The URL of database `name` on the test server. */
export const urlFor = (name: string) => {
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  return url.toString()
}

/** A fresh, empty database on the server for one suite; dropped when the layer closes. */
export const freshDatabase = (prefix = "fg_test"): Layer.Layer<PgClient.PgClient | SqlClient.SqlClient, unknown> =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const name = `${prefix}_${randomUUID().replace(/-/g, "").slice(0, 16)}`
    const admin = yield* PgClient.make({ url: Redacted.make(serverUrl), maxConnections: 1 })
    yield* Effect.acquireRelease(
      admin`CREATE DATABASE ${admin(name)}`,
      () => Effect.ignore(admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`)
    )
    return PgClient.layer({ url: Redacted.make(urlFor(name)), maxConnections: 8 })
  }).pipe(Effect.provide(Reactivity.layer)))

/** A fresh database with the fibergraph schema migrated. */
export const migratedDatabase = (prefix?: string) =>
  Layer.effectDiscard(Migrations.migrate).pipe(Layer.provideMerge(freshDatabase(prefix)))
