/**
 * The `fibergraph` command line. Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 corruption,
 * 5 conflict.
 */
import { Command, Options, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Exit, Layer, Option } from "effect"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Migrations from "../layers/sql/Migrations.js"
import * as Store from "../layers/Store.js"

const storeOption = Options.text("store").pipe(
  Options.withDescription(
    "store URL: postgres://…, pglite://<dir> or memory:// (default: FIBERGRAPH_STORE, DATABASE_URL, pglite://./.fibergraph)"
  ),
  Options.optional
)

const json = Options.boolean("json").pipe(Options.withDescription("print the result as JSON"))

/** The store named by `--store`, or by the environment, opened with the given migration mode. */
const storeLayer = (url: Option.Option<string>, migrate: Store.MigrateMode) =>
  Layer.unwrapEffect(Effect.map(Store.config, (options) =>
    Store.layer({ ...options, url: Option.getOrElse(url, () => options.url), migrate })))

const migrate = Command.make(
  "migrate",
  { store: storeOption, check: Options.boolean("check").pipe(Options.withDescription("only verify the schema version")), json },
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

const fibergraph = Command.make("fibergraph").pipe(
  Command.withDescription("a durable graph runtime for LLM agents and workflows"),
  Command.withSubcommands([migrate])
)

const cli = Command.run(fibergraph, { name: "fibergraph", version: "0.1.0" })

/** Maps a failure to the documented exit code. */
const exitCode = (cause: Cause.Cause<unknown>): number => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure)) return 1
  if (ValidationError.isValidationError(failure.value)) return 2
  const tag = (failure.value as { readonly _tag?: string })._tag ?? ""
  if (tag === "StoreUrlError") return 2
  if (tag === "RunNotFoundError") return 3
  if (tag === "EventLogCorruptionError" || tag === "SchemaVersionError") return 4
  if (tag === "StaleClaimError" || tag === "EventSequenceConflictError" || tag === "RunStatusError") return 5
  return 1
}

const main = Effect.suspend(() => cli(process.argv)).pipe(
  Effect.exit,
  Effect.flatMap((exit) =>
    Exit.isSuccess(exit)
      ? Effect.void
      : Effect.gen(function*() {
        const failure = Cause.failureOption(exit.cause)
        const error = Option.getOrUndefined(failure)
        if (!ValidationError.isValidationError(error)) {
          const message = (error as { readonly message?: unknown } | undefined)?.message
          yield* Console.error(typeof message === "string" ? message : Cause.pretty(exit.cause))
        }
        process.exitCode = exitCode(exit.cause)
      })
  ),
  Effect.provide(Layer.mergeAll(NodeContext.layer))
)

NodeRuntime.runMain(main, { disableErrorReporting: true, disablePrettyLogger: true })
