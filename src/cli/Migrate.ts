/**
 * `fibergraph migrate [--check]`: applies the store's schema migrations, or only verifies that the
 * database is at this code's schema version.
 */
import { Command, Options } from "@effect/cli"
import * as SqlClient from "@effect/sql/SqlClient"
import { Console, Effect, Option } from "effect"
import * as Migrations from "../layers/sql/Migrations.js"
import * as Store from "../layers/Store.js"
import { jsonOption, storeLayer, storeOption } from "./Common.js"

/** The `migrate` command. */
export const command = Command.make(
  "migrate",
  {
    store: storeOption,
    check: Options.boolean("check").pipe(Options.withDescription("only verify the schema version")),
    json: jsonOption
  },
  ({ check, json, store }) =>
    Effect.gen(function*() {
      const opened = yield* Store.Store
      const sql = Option.getOrUndefined(opened.sql)
      if (sql === undefined) {
        return yield* Console.log(json ? JSON.stringify({ store: opened.url, migrations: [] }) : `${opened.url}: nothing to migrate`)
      }
      const withSql = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) =>
        Effect.provideService(effect, SqlClient.SqlClient, sql)
      const applied = check ? [] : yield* withSql(Migrations.migrate)
      const version = yield* withSql(Migrations.databaseVersion)
      if (json) {
        return yield* Console.log(JSON.stringify({ store: opened.url, version, applied: applied.map(([id, name]) => ({ id, name })) }))
      }
      yield* Console.log(
        applied.length === 0
          ? `${opened.url}: schema at version ${version}, up to date`
          : `${opened.url}: applied ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}; schema at version ${version}`
      )
    }).pipe(Effect.provide(storeLayer(store, check ? "check" : "skip")))
).pipe(Command.withDescription("apply the store's schema migrations (or --check the version)"))
