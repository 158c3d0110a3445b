/**
 * An `@effect/sql` client over an embedded PGlite database (Postgres compiled to WASM, running
 * in-process, with pgvector), so the SQL stores run unchanged against `pglite://` and `postgres://`.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import { SqlClient, SqlError, Statement } from "@effect/sql"
import type { SqlConnection } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { PGlite, types as PgTypes } from "@electric-sql/pglite"
import type { PGliteOptions } from "@electric-sql/pglite"
import { vector } from "@electric-sql/pglite-pgvector"
import { Config, Context, Effect, Layer, Option, Queue, Schema, Stream } from "effect"
import type { ConfigError, Scope } from "effect"
import * as NodeFs from "node:fs/promises"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"

/** Options for opening an embedded PGlite database. */
export interface PgliteClientConfig {
  /** Directory holding the database; created if missing. `undefined` keeps the database in memory. */
  readonly dataDir?: string | undefined
  /** A data-directory tarball (`dumpDataDir`) to start from instead of running `initdb`. */
  readonly loadDataDir?: Blob | undefined
  readonly spanAttributes?: Record<string, unknown> | undefined
  readonly transformResultNames?: ((str: string) => string) | undefined
  readonly transformQueryNames?: ((str: string) => string) | undefined
  readonly transformJson?: boolean | undefined
}

/** The embedded store could not be opened; `reason` says why and what to do about it. */
export class PgliteOpenError extends Schema.TaggedError<PgliteOpenError>()("PgliteOpenError", {
  dataDir: Schema.String,
  reason: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message() {
    return `cannot open the embedded store at ${this.dataDir}: ${this.reason}`
  }
}

/**
 * A `SqlClient` backed by PGlite, with Postgres `LISTEN`/`NOTIFY` and data-directory dumps.
 * Statements run one at a time; `.stream` reads the whole result before emitting it.
 */
export interface PgliteSqlClient extends SqlClient.SqlClient {
  readonly config: PgliteClientConfig
  /** Wraps a value as a JSON parameter, exactly like `PgClient.json`. */
  readonly json: (value: unknown) => Statement.Fragment
  /** Payloads sent to `channel`; `LISTEN` starts when the stream runs and ends with it. */
  readonly listen: (channel: string) => Stream.Stream<string, SqlError.SqlError>
  /** Runs `LISTEN channel` now and returns its payloads; use it to subscribe before checking for work. */
  readonly subscribe: (channel: string) => Effect.Effect<Stream.Stream<string>, SqlError.SqlError, Scope.Scope>
  /** Sends `payload` to `channel` (delivered at commit when inside a transaction). */
  readonly notify: (channel: string, payload: string) => Effect.Effect<void, SqlError.SqlError>
  /** A tarball of the data directory, loadable through `loadDataDir`; waits for running transactions. */
  readonly dumpDataDir: (compression?: "none" | "gzip") => Effect.Effect<Blob, SqlError.SqlError>
}

/** The PGlite-backed SQL client; the same value is also provided as `SqlClient.SqlClient`. */
export class PgliteClient extends Context.Tag("fibergraph/PgliteClient")<PgliteClient, PgliteSqlClient>() {}

const LOCK_FILE = "fibergraph.lock"
const MEMORY = "memory://"
const openDataDirs = new Set<string>()

const nodeErrorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

const describeNodeError = (error: unknown): string =>
  error instanceof Error ? error.message : String(error)

const emscriptenErrno: Record<number, string> = {
  2: "EACCES: permission denied",
  19: "EDQUOT: disk quota exceeded",
  20: "EEXIST: file already exists",
  31: "EISDIR: is a directory",
  44: "ENOENT: no such file or directory",
  51: "ENOSPC: no space left on device",
  54: "ENOTDIR: not a directory",
  63: "EPERM: operation not permitted",
  69: "EROFS: read-only file system"
}

const describePgliteError = (error: unknown): string => {
  if (typeof error === "object" && error !== null && "errno" in error && typeof error.errno === "number") {
    return `file system error ${emscriptenErrno[error.errno] ?? `errno ${error.errno}`}`
  }
  if (error instanceof Error) {
    const code = nodeErrorCode(error)
    return code === undefined || error.message.includes(code) ? error.message : `${error.message} (${code})`
  }
  return String(error)
}

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return nodeErrorCode(error) === "EPERM"
  }
}

const inspectDataDir = async (dir: string, seeding: boolean): Promise<string | undefined> => {
  let stat: Awaited<ReturnType<typeof NodeFs.stat>>
  try {
    stat = await NodeFs.stat(dir)
  } catch (error) {
    const code = nodeErrorCode(error)
    if (code === "ENOTDIR") {
      return `part of its path is a file, not a directory (${describeNodeError(error)}); ` +
        "choose a path under a directory"
    }
    if (code !== "ENOENT") {
      return `cannot inspect it (${describeNodeError(error)}); check the path and its permissions`
    }
    try {
      await NodeFs.mkdir(dir, { recursive: true })
      return undefined
    } catch (mkdirError) {
      return `cannot create it (${describeNodeError(mkdirError)}); create the directory or choose a writable location`
    }
  }
  if (!stat.isDirectory()) {
    return "it is a file, not a directory; point dataDir at a directory (it is created if missing)"
  }
  const writable = (stat.mode & 0o222) !== 0 &&
    await NodeFs.access(dir, NodeFs.constants.R_OK | NodeFs.constants.W_OK).then(() => true, () => false)
  if (!writable) {
    return "the directory is not writable; fix its permissions or choose another location"
  }
  const entries = await NodeFs.readdir(dir)
  if (entries.includes("PG_VERSION")) {
    return seeding
      ? "it already holds a database, and loadDataDir only seeds a new or empty directory; " +
        "remove loadDataDir or choose another directory"
      : undefined
  }
  if (entries.some((entry) => entry !== LOCK_FILE)) {
    return "it is not empty and holds no database (no PG_VERSION); choose an empty or new directory"
  }
  return undefined
}

const lockDataDir = (
  dir: string
): Effect.Effect<{ readonly reassert: Effect.Effect<void> }, PgliteOpenError, Scope.Scope> => {
  const lockPath = NodePath.join(dir, LOCK_FILE)
  const owner = `${process.pid}\n${NodeOs.hostname()}\n`
  const fail = (reason: string, cause?: unknown) =>
    new PgliteOpenError({ dataDir: dir, reason, ...(cause === undefined ? {} : { cause }) })
  const acquire = Effect.tryPromise({
    try: async (): Promise<string | undefined> => {
      if (openDataDirs.has(dir)) {
        return "it is already open in this process; share one layer instead of opening it twice"
      }
      try {
        await NodeFs.writeFile(lockPath, owner, { flag: "wx" })
      } catch (error) {
        if (nodeErrorCode(error) !== "EEXIST") throw error
        const [pidLine = "", host = ""] = (await NodeFs.readFile(lockPath, "utf8")).split("\n")
        const pid = Number.parseInt(pidLine, 10)
        const heldElsewhere = host !== NodeOs.hostname()
          ? true
          : Number.isInteger(pid) && pid !== process.pid && isAlive(pid)
        if (heldElsewhere) {
          return `it is in use by process ${pidLine} on ${host || "an unknown host"}; stop that process, ` +
            `or delete ${lockPath} if no process uses the store`
        }
        await NodeFs.writeFile(lockPath, owner, { flag: "w" })
      }
      openDataDirs.add(dir)
      return undefined
    },
    catch: (cause) => fail(`cannot write its lock file ${lockPath} (${describeNodeError(cause)})`, cause)
  }).pipe(Effect.flatMap((reason) => reason === undefined ? Effect.void : Effect.fail(fail(reason))))
  const reassert = Effect.promise(() => NodeFs.writeFile(lockPath, owner).catch(() => undefined))
  return Effect.acquireRelease(acquire, () =>
    Effect.promise(async () => {
      openDataDirs.delete(dir)
      await NodeFs.rm(lockPath, { force: true }).catch(() => undefined)
    })).pipe(Effect.as({ reassert }))
}

const openPglite = (
  location: string,
  options: PgliteClientConfig
): Effect.Effect<PGlite, PgliteOpenError, Scope.Scope> => {
  const pgliteOptions: PGliteOptions = {
    extensions: { vector },
    parsers: { [PgTypes.INT8]: (value: string) => value },
    // PostgreSQL's default 128 MB of shared buffers lives in the WebAssembly heap, which never
    // shrinks: 16 MB keeps an idle embedded worker ~140 MB smaller (BENCHMARKS.md, worker RSS).
    postgresqlconf: ["shared_buffers=16MB"],
    ...(options.dataDir === undefined ? {} : { dataDir: location }),
    ...(options.loadDataDir === undefined ? {} : { loadDataDir: options.loadDataDir })
  }
  return Effect.acquireRelease(
    Effect.tryPromise({
      try: () => PGlite.create(pgliteOptions),
      catch: (cause) => cause
    }).pipe(
      Effect.catchAll((cause) =>
        Effect.promise(async () => {
          const version = options.dataDir === undefined ? undefined : await NodeFs.readFile(
            NodePath.join(location, "PG_VERSION"),
            "utf8"
          ).then((v) => v.trim(), () => undefined)
          const detail = describePgliteError(cause)
          const reason = version === undefined
            ? `PGlite failed to start (${detail})`
            : `PostgreSQL failed to start on it (${detail}); it holds a PostgreSQL ${version} data directory ` +
              "that may be damaged or from another PostgreSQL major version; " +
              "restore it from a dump or choose another directory"
          return new PgliteOpenError({ dataDir: location, reason, cause })
        }).pipe(Effect.flatMap(Effect.fail))
      )
    ),
    (db) =>
      Effect.tryPromise(() => db.close()).pipe(
        Effect.catchAll((error) => Effect.logWarning(`PGlite did not close cleanly at ${location}`, error))
      )
  )
}

const quoteIdentifier = (name: string): string => `"${name.replaceAll("\"", "\"\"")}"`

const pgJson = Statement.custom<PgClient.PgCustom>("PgJson")

const toSqlError = (message: string) => (cause: unknown): SqlError.SqlError =>
  new SqlError.SqlError({ cause, message: `${message}: ${describePgliteError(cause)}` })

/**
 * A first-come, first-served lock. Effect's `Semaphore` lets a fiber that releases and re-takes in
 * one run barge ahead of waiters, so a fiber issuing statements back to back starves a waiting
 * transaction; here release hands the lock straight to the oldest waiter.
 */
const makeFairLock = () => {
  let locked = false
  const waiters: Array<() => void> = []
  const unsafeRelease = () => {
    const next = waiters.shift()
    if (next === undefined) locked = false
    else next()
  }
  const take = Effect.async<void>((resume) => {
    if (!locked) {
      locked = true
      resume(Effect.void)
      return
    }
    let granted = false
    const waiter = () => {
      granted = true
      resume(Effect.void)
    }
    waiters.push(waiter)
    return Effect.sync(() => {
      const index = waiters.indexOf(waiter)
      if (index >= 0) waiters.splice(index, 1)
      else if (granted) unsafeRelease()
    })
  })
  const release = Effect.sync(unsafeRelease)
  return {
    scoped: Effect.uninterruptibleMask((restore) =>
      Effect.zipRight(restore(take), Effect.addFinalizer(() => release))
    ),
    with: <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
      Effect.uninterruptibleMask((restore) => Effect.zipRight(restore(take), Effect.ensuring(restore(effect), release)))
  }
}

type TransformRows = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

/** Opens a PGlite database (in memory, or in `dataDir`) and builds a `SqlClient` over it; closes it with the scope. */
export const make = Effect.fn("PgliteClient.make")(function*(options: PgliteClientConfig = {}) {
  const location = options.dataDir === undefined ? MEMORY : NodePath.resolve(options.dataDir)
  if (options.dataDir !== undefined) {
    const problem = yield* Effect.tryPromise({
      try: () => inspectDataDir(location, options.loadDataDir !== undefined),
      catch: (cause) =>
        new PgliteOpenError({
          dataDir: location,
          reason: `cannot inspect it (${describeNodeError(cause)}); check the path and its permissions`,
          cause
        })
    })
    if (problem !== undefined) {
      return yield* new PgliteOpenError({ dataDir: location, reason: problem })
    }
  }
  const dataDirLock = options.dataDir === undefined ? undefined : yield* lockDataDir(location)
  const db = yield* openPglite(location, options)
  if (dataDirLock !== undefined) yield* dataDirLock.reassert

  const run = <A>(message: string, query: () => Promise<A>): Effect.Effect<A, SqlError.SqlError> =>
    Effect.uninterruptible(Effect.tryPromise({ try: query, catch: toSqlError(message) }))

  const rows = (sql: string, params: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<any>, SqlError.SqlError> =>
    params.length === 0
      ? Effect.map(
        run("Failed to execute statement", () => db.exec(sql)),
        (results) => results.length === 1 ? results[0]!.rows : results.map((result) => result.rows)
      )
      : Effect.map(
        run("Failed to execute statement", () => db.query(sql, params as Array<unknown>)),
        (result) => result.rows
      )

  const execute = (sql: string, params: ReadonlyArray<unknown>, transformRows: TransformRows) =>
    transformRows === undefined ? rows(sql, params) : Effect.map(rows(sql, params), transformRows)

  const connection: SqlConnection.Connection = {
    execute,
    executeUnprepared: execute,
    executeRaw: (sql, params) =>
      params.length === 0
        ? Effect.map(
          run("Failed to execute statement", () => db.exec(sql)),
          (results) => results.length === 1 ? results[0] : results
        )
        : run("Failed to execute statement", () => db.query(sql, params as Array<unknown>)),
    executeValues: (sql, params) =>
      Effect.map(
        run(
          "Failed to execute statement",
          () => db.query<Array<unknown>>(sql, params as Array<unknown>, { rowMode: "array" })
        ),
        (result) => result.rows
      ),
    executeStream: (sql, params, transformRows) =>
      Stream.unwrap(Effect.map(execute(sql, params, transformRows), (rows) => Stream.fromIterable(rows)))
  }

  const connectionLock = makeFairLock()
  const exclusiveConnection: SqlConnection.Connection.Acquirer = Effect.as(connectionLock.scoped, connection)
  const withExclusive = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.flatMap(
      Effect.serviceOption(SqlClient.TransactionConnection),
      (transaction) =>
        Option.isSome(transaction) && transaction.value[0] === connection ? effect : connectionLock.with(effect)
    )

  const client = yield* SqlClient.make({
    acquirer: exclusiveConnection,
    transactionAcquirer: exclusiveConnection,
    compiler: PgClient.makeCompiler(options.transformQueryNames, options.transformJson),
    spanAttributes: [
      ...(options.spanAttributes ? Object.entries(options.spanAttributes) : []),
      ["db.system.name", "postgresql"],
      ["db.namespace", "postgres"],
      ["server.address", location]
    ],
    transformRows: options.transformResultNames
      ? Statement.defaultTransforms(options.transformResultNames, options.transformJson).array
      : undefined
  })

  const listening = new Map<string, number>()
  const listenLock = makeFairLock()
  const listenStatement = (statement: string) =>
    withExclusive(run("Failed to listen", () => db.exec(statement)))

  const subscribe = Effect.fn("PgliteClient.subscribe")(function*(channel: string) {
    const queue = yield* Effect.acquireRelease(Queue.unbounded<string>(), Queue.shutdown)
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        db.onNotification((from, payload) => {
          if (from === channel) Queue.unsafeOffer(queue, payload)
        })
      ),
      (unsubscribe) => Effect.sync(unsubscribe)
    )
    yield* Effect.acquireRelease(
      listenLock.with(Effect.gen(function*() {
        const count = listening.get(channel) ?? 0
        if (count === 0) yield* listenStatement(`LISTEN ${quoteIdentifier(channel)}`)
        listening.set(channel, count + 1)
      })),
      () =>
        listenLock.with(Effect.gen(function*() {
          const count = (listening.get(channel) ?? 1) - 1
          if (count > 0) {
            listening.set(channel, count)
            return
          }
          listening.delete(channel)
          if (!db.closed) yield* Effect.ignore(listenStatement(`UNLISTEN ${quoteIdentifier(channel)}`))
        }))
    )
    return Stream.fromQueue(queue)
  })

  const service: PgliteSqlClient = Object.assign(client, {
    config: options,
    json: (value: unknown) => pgJson(value),
    subscribe,
    listen: (channel: string) => Stream.unwrapScoped(subscribe(channel)),
    notify: Effect.fn("PgliteClient.notify")(function*(channel: string, payload: string) {
      yield* client`SELECT pg_notify(${channel}, ${payload})`
    }),
    dumpDataDir: Effect.fn("PgliteClient.dumpDataDir")(function*(compression: "none" | "gzip" = "none") {
      return yield* withExclusive(run("Failed to dump the data directory", () => db.dumpDataDir(compression)))
    })
  })
  return service
})

const toContext = (client: PgliteSqlClient) =>
  Context.make(PgliteClient, client).pipe(Context.add(SqlClient.SqlClient, client))

/** Provides `PgliteClient` and `SqlClient` over a PGlite database opened with `options`. */
export const layer = (
  options: PgliteClientConfig = {}
): Layer.Layer<PgliteClient | SqlClient.SqlClient, PgliteOpenError> =>
  Layer.scopedContext(Effect.map(make(options), toContext)).pipe(Layer.provide(Reactivity.layer))

/** Like `layer`, with the options read through `Config`. */
export const layerConfig = (
  config: Config.Config.Wrap<PgliteClientConfig>
): Layer.Layer<PgliteClient | SqlClient.SqlClient, PgliteOpenError | ConfigError.ConfigError> =>
  Layer.scopedContext(Effect.map(Effect.flatMap(Config.unwrap(config), make), toContext)).pipe(
    Layer.provide(Reactivity.layer)
  )

/** An initialised database frozen as a data-directory tarball; every clone of it starts from the same state. */
export class PgliteTemplate extends Context.Tag("fibergraph/PgliteTemplate")<PgliteTemplate, {
  /** The data-directory tarball, passed to PGlite as `loadDataDir`. */
  readonly snapshot: Blob
}>() {}

/** How to build a template: `setup` runs once (extensions, migrations, seed rows) before the dump. */
export interface PgliteTemplateOptions<E, R> {
  readonly setup?: Effect.Effect<unknown, E, R> | undefined
}

/** Initialises a fresh in-memory database once, runs `setup` on it and dumps it as a template. */
export const makeTemplate = <E = never, R = never>(
  options: PgliteTemplateOptions<E, R> = {}
): Effect.Effect<
  PgliteTemplate["Type"],
  PgliteOpenError | SqlError.SqlError | E,
  Exclude<R, PgliteClient | SqlClient.SqlClient>
> =>
  Effect.gen(function*() {
    const client = yield* make()
    if (options.setup !== undefined) {
      yield* Effect.provide(options.setup, toContext(client))
    }
    const snapshot = yield* client.dumpDataDir("none")
    return { snapshot }
  }).pipe(Effect.scoped, Effect.provide(Reactivity.layer), Effect.withSpan("PgliteClient.makeTemplate"))

/** Provides a `PgliteTemplate` built once by `makeTemplate`; share it (e.g. with `it.layer`) and clone it per test. */
export const layerTemplate = <E = never, R = never>(
  options: PgliteTemplateOptions<E, R> = {}
): Layer.Layer<
  PgliteTemplate,
  PgliteOpenError | SqlError.SqlError | E,
  Exclude<R, PgliteClient | SqlClient.SqlClient>
> =>
  Layer.effect(PgliteTemplate, makeTemplate(options))

/** Opens a new, independent database cloned from the `PgliteTemplate` in context (in memory unless `dataDir`). */
export const layerFromTemplate = (
  options: Omit<PgliteClientConfig, "loadDataDir"> = {}
): Layer.Layer<PgliteClient | SqlClient.SqlClient, PgliteOpenError, PgliteTemplate> =>
  Layer.scopedContext(
    PgliteTemplate.pipe(
      Effect.flatMap((template) => make({ ...options, loadDataDir: template.snapshot })),
      Effect.map(toContext)
    )
  ).pipe(Layer.provide(Reactivity.layer))
