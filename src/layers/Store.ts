/**
 * The store, chosen by URL: `postgres://…` / `postgresql://…` (a Postgres server through
 * `@effect/sql-pg`), `pglite://<dir>` (embedded Postgres in-process) or `memory://`. Opening it
 * connects (with retries for a server), applies or checks the migrations and builds the backend's
 * store (`SqlStore` or `MemoryStore`: `RunStore` and `WorkQueue` together); a store that cannot
 * be opened fails with the reason, never falls back to memory.
 *
 * The layer provides `RunStore`, `WorkQueue` and `Store`, which says which store is open (`kind`,
 * a password-free `url`) and carries its `SqlClient` (`sql`, `Option.none()` for `memory://`) for
 * services that need SQL beside the store (usage).
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Config, Context, Duration, Effect, Either, Layer, Option, Redacted, Ref, Schedule, Schema } from "effect"
import type { ConfigError, Scope } from "effect"
import * as NodePath from "node:path"
import { CallJournal } from "../services/CallJournal.js"
import { RunStore } from "../services/RunStore.js"
import { WorkQueue } from "../services/WorkQueue.js"
import * as MemoryStore from "./memory/MemoryStore.js"
import * as Migrations from "./sql/Migrations.js"
import * as PgliteClient from "./sql/PgliteClient.js"
import * as SqlStore from "./sql/SqlStore.js"

/** The kinds of store a URL can name. */
export type StoreKind = "postgres" | "pglite" | "memory"

/** A Postgres server. `url` is safe to print (password masked); `connectionString` is the real one. */
export interface PostgresStoreUrl {
  readonly kind: "postgres"
  readonly url: string
  readonly connectionString: Redacted.Redacted<string>
  /** Host name, IP address, or Unix socket directory (from `?host=`). */
  readonly host: string
  readonly port: number
  /** `undefined` when the URL names none: the server then uses the user's name. */
  readonly database: string | undefined
  readonly user: string | undefined
}

/** An embedded PGlite database in `dataDir` (absolute, resolved against the working directory). */
export interface PgliteStoreUrl {
  readonly kind: "pglite"
  readonly url: string
  readonly dataDir: string
}

/** The in-memory store: nothing survives the process. */
export interface MemoryStoreUrl {
  readonly kind: "memory"
  readonly url: string
}

/** A parsed store URL. */
export type StoreUrl = PostgresStoreUrl | PgliteStoreUrl | MemoryStoreUrl

/** A store URL that cannot be used; `url` has its password masked, `reason` says what to write instead. */
export class StoreUrlError extends Schema.TaggedError<StoreUrlError>()("StoreUrlError", {
  url: Schema.String,
  reason: Schema.String,
  /** Where the URL came from (e.g. `FIBERGRAPH_STORE`), when it came from configuration. */
  source: Schema.optional(Schema.String)
}) {
  override get message() {
    const from = this.source === undefined ? "" : ` (from ${this.source})`
    return `invalid store URL ${JSON.stringify(this.url)}${from}: ${this.reason}`
  }
}

/** The store could not be opened (connection, embedded database, migrations or options); `reason` says why. */
export class StoreOpenError extends Schema.TaggedError<StoreOpenError>()("StoreOpenError", {
  kind: Schema.Literal("postgres", "pglite", "memory"),
  /** The store URL, password masked. */
  url: Schema.String,
  reason: Schema.String,
  host: Schema.optional(Schema.String),
  port: Schema.optional(Schema.Number),
  database: Schema.optional(Schema.String),
  dataDir: Schema.optional(Schema.String),
  /** How many times the connection was tried. */
  attempts: Schema.optional(Schema.Number),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message() {
    switch (this.kind) {
      case "postgres": {
        const target = `host ${this.host}, port ${this.port}, database ${this.database ?? "(the user's default)"}`
        const tries = this.attempts !== undefined && this.attempts > 1 ? ` after ${this.attempts} attempts` : ""
        return `cannot open the Postgres store ${this.url} (${target})${tries}: ${this.reason}`
      }
      case "pglite":
        return `cannot open the embedded store ${this.url} (directory ${this.dataDir}): ${this.reason}`
      case "memory":
        return `cannot open the memory store: ${this.reason}`
    }
  }
}

/** What to do with migrations when the store opens: apply pending ones, only check the version, or neither. */
export type MigrateMode = "apply" | "check" | "skip"

/** Options for opening a store. */
export interface Options {
  /** The store URL; a `Redacted` one keeps its password out of logs. */
  readonly url: string | Redacted.Redacted<string>
  /** Default `"apply"`. `"check"` refuses a database whose schema differs from the code's. Ignored for `memory://`. */
  readonly migrate?: MigrateMode | undefined
  /** How many checkpoints to keep per run (default 3). */
  readonly retainCheckpoints?: number | undefined
  /** Upper bound of the server connection pool (default 20). */
  readonly poolMax?: number | undefined
  /** How long one connection attempt to a server may take (default 10 seconds). */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** How a server connection that fails transiently (refused, timed out) is retried at startup (default `connectRetry`). */
  readonly connectRetry?: Schedule.Schedule<unknown, unknown> | undefined
}

/** Defaults of the store options and configuration. */
export const defaults = {
  url: "pglite://./.fibergraph",
  migrate: "apply",
  poolMax: 20,
  connectTimeout: Duration.seconds(10)
} as const satisfies {
  readonly url: string
  readonly migrate: MigrateMode
  readonly poolMax: number
  readonly connectTimeout: Duration.Duration
}

/** Startup retries of a server connection: 5 attempts, exponential from 250 ms, capped at 4 s, jittered. */
export const connectRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("250 millis").pipe(
  Schedule.union(Schedule.spaced("4 seconds")),
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(4))
)

/** The open store: which one it is, its run store and queue, and its SQL client when it has one. */
export class Store extends Context.Tag("fibergraph/Store")<Store, {
  readonly kind: StoreKind
  /** The store URL, password masked: safe to log and show. */
  readonly url: string
  readonly runStore: RunStore["Type"]
  readonly workQueue: WorkQueue["Type"]
  readonly callJournal: CallJournal["Type"]
  /** The store's SQL client (server or embedded); `Option.none()` for `memory://`. */
  readonly sql: Option.Option<SqlClient.SqlClient>
}>() {}

const accepted = "postgres://user:password@host:5432/database, postgresql://…, pglite://<directory> " +
  "(e.g. pglite://./.fibergraph) or memory://"

const schemeWithSlashes = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//
const schemeWithoutSlashes = /^([A-Za-z][A-Za-z0-9+.-]+):/

/** Masks the password of a URL (user info and `password=` parameters), however malformed the URL is. */
export const redact = (url: string): string =>
  url
    .replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:@/?#]*:)(.*)@/, "$1***@")
    .replace(/([?&]password=)[^&#]*/gi, "$1***")

const pathHint = (path: string): string =>
  NodePath.isAbsolute(path) || path.startsWith("./") || path.startsWith("../") ? path : `./${path}`

const parsePostgres = (
  input: string,
  body: string,
  fail: (reason: string) => StoreUrlError
): Either.Either<StoreUrl, StoreUrlError> => {
  const queryAt = body.indexOf("?")
  const beforeQuery = queryAt === -1 ? body : body.slice(0, queryAt)
  const afterUser = beforeQuery.slice(beforeQuery.lastIndexOf("@") + 1)
  const slash = afterUser.indexOf("/")
  const hostPort = slash === -1 ? afterUser : afterUser.slice(0, slash)
  const [, rawHost = "", rawPort] = /^(\[[^\]]*\]|[^:]*)(?::(.*))?$/.exec(hostPort) ?? []
  const checkPort = (port: string): Either.Either<number, StoreUrlError> => {
    const value = /^\d{1,5}$/.test(port) ? Number(port) : Number.NaN
    return value >= 1 && value <= 65535
      ? Either.right(value)
      : Either.left(fail(`the port ${JSON.stringify(port)} is not a number from 1 to 65535`))
  }
  if (rawPort !== undefined) {
    const port = checkPort(rawPort)
    if (Either.isLeft(port)) return Either.left(port.left)
  }
  const hostParam = /[?&]host=([^&#]+)/.exec(body)
  if (rawHost === "" && hostParam === null) {
    return Either.left(fail("it names no host; write postgres://user:password@host:5432/database"))
  }
  const malformed = fail(
    "it is not a valid URL; percent-encode reserved characters in the user name and password " +
      "(e.g. \"@\" as %40, \"/\" as %2F), as in postgres://user:password@host:5432/database"
  )
  let parsed: URL
  try {
    parsed = new URL(input)
  } catch {
    return Either.left(malformed)
  }
  if (parsed.hostname.toLowerCase() !== rawHost.toLowerCase()) return Either.left(malformed)
  const decode = (value: string) => {
    try {
      return decodeURIComponent(value)
    } catch {
      return value
    }
  }
  const queryHost = parsed.searchParams.get("host")
  const host = queryHost || decode(parsed.hostname.replace(/^\[(.*)\]$/, "$1"))
  if (host === "") {
    return Either.left(fail("it names no host; write postgres://user:password@host:5432/database"))
  }
  const queryPort = parsed.searchParams.get("port")
  const port = queryPort === null ? Either.right(rawPort === undefined ? 5432 : Number(rawPort)) : checkPort(queryPort)
  if (Either.isLeft(port)) return Either.left(port.left)
  const database = decode(parsed.pathname.replace(/^\//, "")) || undefined
  const user = parsed.searchParams.get("user") || decode(parsed.username) || undefined
  return Either.right({
    kind: "postgres",
    url: redact(input),
    connectionString: Redacted.make(input),
    host,
    port: port.right,
    database,
    user
  })
}

const parseWith = (value: string | Redacted.Redacted<string>, source?: string): Either.Either<StoreUrl, StoreUrlError> => {
  const input = (typeof value === "string" ? value : Redacted.value(value)).trim()
  const fail = (reason: string) =>
    new StoreUrlError({ url: redact(input), reason, ...(source === undefined ? {} : { source }) })
  if (input === "") {
    return Either.left(fail(`it is empty; use ${accepted}`))
  }
  const match = schemeWithSlashes.exec(input)
  if (match === null) {
    const bare = schemeWithoutSlashes.exec(input)
    if (bare !== null) {
      const scheme = bare[1]!.toLowerCase()
      return Either.left(fail(
        ["postgres", "postgresql", "pglite", "memory"].includes(scheme)
          ? `the scheme needs "//": write ${scheme}://…`
          : `the scheme "${scheme}:" is not supported; use ${accepted}`
      ))
    }
    return Either.left(fail(
      `a directory needs the pglite:// scheme: write pglite://${pathHint(input)} ` +
        "(or postgres://… for a server, memory:// for no persistence)"
    ))
  }
  const scheme = match[1]!.toLowerCase()
  const body = input.slice(match[0].length)
  switch (scheme) {
    case "postgres":
    case "postgresql":
      return parsePostgres(input, body, fail)
    case "pglite": {
      if (body === "") {
        return Either.left(fail("it names no directory; write pglite://<directory>, e.g. pglite://./.fibergraph"))
      }
      if (body.startsWith("~")) {
        return Either.left(fail(
          "\"~\" is not expanded; write an absolute path (pglite:///home/me/.fibergraph) " +
            "or one relative to the working directory (pglite://./.fibergraph)"
        ))
      }
      return Either.right({ kind: "pglite", url: input, dataDir: NodePath.resolve(body) })
    }
    case "memory":
      return body === ""
        ? Either.right({ kind: "memory", url: "memory://" })
        : Either.left(fail("memory:// takes no path; write memory://"))
    default:
      return Either.left(fail(`the scheme "${scheme}://" is not supported; use ${accepted}`))
  }
}

/**
 * Parses a store URL. Relative `pglite://` directories are resolved against the working
 * directory; a bare path, another scheme or a malformed server URL is a `StoreUrlError`.
 */
export const parse = (url: string | Redacted.Redacted<string>): Either.Either<StoreUrl, StoreUrlError> => parseWith(url)

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

const errorMessage = (error: unknown): string =>
  error instanceof AggregateError && error.errors.length > 0
    ? error.errors.map(errorMessage).join("; ")
    : error instanceof Error
    ? error.message
    : String(error)

const transientCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "57P03",
  "53300"
])

interface ConnectFailure {
  readonly reason: string
  readonly transient: boolean
  readonly cause: unknown
}

const describeConnectFailure = (url: PostgresStoreUrl, error: unknown): ConnectFailure => {
  const cause = typeof error === "object" && error !== null && "_tag" in error && error._tag === "SqlError" &&
      "cause" in error
    ? error.cause
    : error
  const code = errorCode(cause)
  const detail = errorMessage(cause)
  const withCode = code === undefined || detail.includes(code) ? detail : `${detail} (${code})`
  const database = url.database ?? url.user ?? "(the user's default)"
  const result = (reason: string, transient = false): ConnectFailure => ({ reason, transient, cause })
  switch (code) {
    case "ECONNREFUSED":
      return result(
        `connection refused (${detail}): nothing accepts connections there; start the server or fix the host and port`,
        true
      )
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return result(`the host ${url.host} was not found (${detail}); check the host name`, true)
    case "28P01":
      return result(`${detail}; check the user name and password in the URL`)
    case "28000":
      return result(`${detail}; check the user name, and the server's pg_hba.conf for this client`)
    case "3D000":
      return result(
        `${detail}; create it (e.g. createdb -h ${url.host} -p ${url.port} ${database}) ` +
          "or fix the database name in the URL"
      )
  }
  if (code !== undefined && (transientCodes.has(code) || code.startsWith("08"))) return result(withCode, true)
  if (/SASL|password must be a string/i.test(detail)) {
    return result(
      `the server asks for a password and the URL has none (${detail}); ` +
        "write postgres://user:password@host:port/database"
    )
  }
  if (/timed? ?out|timeout|terminated/i.test(detail)) {
    return result(
      `the connection timed out or was closed before the server answered (${detail}); ` +
        "check that the server is reachable and accepting connections",
      true
    )
  }
  return result(withCode)
}

const positiveInteger = (value: number | undefined, name: string): string | undefined =>
  value === undefined || (Number.isInteger(value) && value >= 1)
    ? undefined
    : `${name} must be a positive integer, got ${value}`

const connectPostgres = (url: PostgresStoreUrl, options: Omit<Options, "url">) =>
  Effect.gen(function*() {
    const attempts = yield* Ref.make(0)
    const fail = (failure: ConnectFailure) =>
      Effect.flatMap(Ref.get(attempts), (n) =>
        Effect.fail(
          new StoreOpenError({
            kind: "postgres",
            url: url.url,
            host: url.host,
            port: url.port,
            ...(url.database === undefined ? {} : { database: url.database }),
            attempts: n,
            reason: failure.reason,
            cause: failure.cause
          })
        ))
    return yield* Ref.update(attempts, (n) => n + 1).pipe(
      Effect.zipRight(
        PgClient.make({
          url: url.connectionString,
          maxConnections: options.poolMax ?? defaults.poolMax,
          connectTimeout: options.connectTimeout ?? defaults.connectTimeout,
          applicationName: "fibergraph"
        })
      ),
      Effect.mapError((error) => describeConnectFailure(url, error)),
      Effect.tapError((failure) =>
        failure.transient ? Effect.logDebug(`store connection attempt failed: ${failure.reason}`) : Effect.void
      ),
      Effect.retry({
        schedule: options.connectRetry ?? connectRetry,
        while: (failure: ConnectFailure) => failure.transient
      }),
      Effect.catchAll(fail)
    )
  })

const openSql = (
  url: PostgresStoreUrl | PgliteStoreUrl,
  options: Omit<Options, "url">
): Layer.Layer<SqlClient.SqlClient, StoreOpenError> =>
  url.kind === "postgres"
    ? Layer.scopedContext(
      Effect.map(connectPostgres(url, options), (client) =>
        Context.make(PgClient.PgClient, client).pipe(Context.add(SqlClient.SqlClient, client)))
    ).pipe(Layer.provide(Reactivity.layer))
    : PgliteClient.layer({ dataDir: url.dataDir }).pipe(
      Layer.mapError((error) =>
        new StoreOpenError({ kind: "pglite", url: url.url, dataDir: url.dataDir, reason: error.reason, cause: error })
      )
    )

const migrationFailure = (
  url: PostgresStoreUrl | PgliteStoreUrl,
  error: { readonly _tag: string; readonly message: string }
) =>
  new StoreOpenError({
    kind: url.kind,
    url: url.url,
    ...(url.kind === "postgres"
      ? { host: url.host, port: url.port, ...(url.database === undefined ? {} : { database: url.database }) }
      : { dataDir: url.dataDir }),
    reason: error._tag === "SchemaVersionError" ? error.message : `its migrations failed: ${error.message}`,
    cause: error
  })

const runMigrations = (url: PostgresStoreUrl | PgliteStoreUrl, mode: MigrateMode) => {
  switch (mode) {
    case "apply":
      return Migrations.migrate.pipe(
        Effect.tap((applied) =>
          applied.length === 0
            ? Effect.void
            : Effect.logInfo(`applied migrations ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`)
        ),
        Effect.asVoid,
        Effect.mapError((error) => migrationFailure(url, error))
      )
    case "check":
      return Effect.mapError(Migrations.check, (error) => migrationFailure(url, error))
    case "skip":
      return Effect.void
  }
}

const open = (
  url: StoreUrl,
  options: Omit<Options, "url">
): Effect.Effect<Store["Type"], StoreOpenError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* Effect.annotateCurrentSpan({ "store.kind": url.kind, "store.url": url.url })
    const invalid = positiveInteger(options.retainCheckpoints, "retainCheckpoints") ??
      positiveInteger(options.poolMax, "poolMax")
    if (invalid !== undefined) {
      return yield* new StoreOpenError({
        kind: url.kind,
        url: url.url,
        reason: invalid,
        ...(url.kind === "pglite" ? { dataDir: url.dataDir } : {}),
        ...(url.kind === "postgres" ? { host: url.host, port: url.port } : {})
      })
    }
    const retain = options.retainCheckpoints === undefined ? {} : { retainCheckpoints: options.retainCheckpoints }
    if (url.kind === "memory") {
      const { callJournal, runStore, workQueue } = yield* MemoryStore.make(retain)
      return { kind: url.kind, url: url.url, runStore, workQueue, callJournal, sql: Option.none() }
    }
    const sqlContext = yield* Layer.build(openSql(url, options))
    yield* Effect.provide(runMigrations(url, options.migrate ?? defaults.migrate), sqlContext)
    const { callJournal, runStore, workQueue } = yield* Effect.provide(SqlStore.make(retain), sqlContext)
    return {
      kind: url.kind,
      url: url.url,
      runStore,
      workQueue,
      callJournal,
      sql: Option.some(Context.get(sqlContext, SqlClient.SqlClient))
    }
  })

/** Opens the store named by `options.url` in the current scope; it closes (pool, embedded database) with the scope. */
export const make = Effect.fn("Store.make")(function*(options: Options) {
  const url = yield* parse(options.url)
  return yield* open(url, options)
})

const toContext = (store: Store["Type"]) =>
  Context.make(Store, store).pipe(
    Context.add(RunStore, store.runStore),
    Context.add(WorkQueue, store.workQueue),
    Context.add(CallJournal, store.callJournal)
  )

/** The services a store provides: `Store`, its run store, its queue and its call journal. */
export type Provided = Store | RunStore | WorkQueue | CallJournal

/** Provides `Store`, `RunStore`, `WorkQueue` and `CallJournal` for the store named by `options.url`. */
export const layer = (options: Options): Layer.Layer<Provided, StoreUrlError | StoreOpenError> =>
  Layer.scopedContext(Effect.map(make(options), toContext))

/** Store options as read from configuration, with the variable the URL came from. */
export interface ConfigOptions extends Omit<Options, "url" | "connectTimeout" | "connectRetry"> {
  readonly url: Redacted.Redacted<string>
  /** `FIBERGRAPH_STORE`, `DATABASE_URL`, or `default`. */
  readonly source: string
}

const positive = (name: string) =>
  Config.integer(name).pipe(
    Config.validate({ message: `${name} must be a positive integer`, validation: (n) => n >= 1 })
  )

/**
 * The store options from configuration: the URL from `FIBERGRAPH_STORE`, else `DATABASE_URL`,
 * else `pglite://./.fibergraph`; `DB_POOL_MAX`, `FIBERGRAPH_MIGRATE`, `FIBERGRAPH_RETAIN_CHECKPOINTS`.
 */
export const config: Config.Config<ConfigOptions> = Config.all({
  store: Config.option(Config.redacted("FIBERGRAPH_STORE")),
  databaseUrl: Config.option(Config.redacted("DATABASE_URL")),
  migrate: Config.literal("apply", "check", "skip")("FIBERGRAPH_MIGRATE").pipe(Config.withDefault(defaults.migrate)),
  poolMax: positive("DB_POOL_MAX").pipe(Config.withDefault(defaults.poolMax)),
  retainCheckpoints: Config.option(positive("FIBERGRAPH_RETAIN_CHECKPOINTS"))
}).pipe(Config.map(({ databaseUrl, migrate, poolMax, retainCheckpoints, store }): ConfigOptions => {
  const [url, source] = Option.isSome(store)
    ? [store.value, "FIBERGRAPH_STORE"]
    : Option.isSome(databaseUrl)
    ? [databaseUrl.value, "DATABASE_URL"]
    : [Redacted.make<string>(defaults.url), "default"]
  return {
    url,
    source,
    migrate,
    poolMax,
    ...(Option.isSome(retainCheckpoints) ? { retainCheckpoints: retainCheckpoints.value } : {})
  }
}))

/** Like `layer`, with the options read from `config`; a bad URL's error names the variable it came from. */
export const layerConfig: Layer.Layer<
  Provided,
  StoreUrlError | StoreOpenError | ConfigError.ConfigError
> = Layer.scopedContext(
  Effect.gen(function*() {
    const options = yield* config
    const url = yield* parseWith(options.url, options.source)
    return toContext(yield* open(url, options))
  }).pipe(Effect.withSpan("Store.layerConfig"))
)
