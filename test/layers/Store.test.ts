import * as Reactivity from "@effect/experimental/Reactivity"
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import {
  ConfigProvider,
  Context,
  Effect,
  Either,
  Fiber,
  Layer,
  Option,
  Redacted,
  Schedule,
  TestClock
} from "effect"
import { randomUUID } from "node:crypto"
import * as NodeFs from "node:fs/promises"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import * as Migrations from "../../src/layers/sql/Migrations.js"
import * as Store from "../../src/layers/Store.js"
import { RunStore } from "../../src/services/RunStore.js"
import { makeCheckpoint, makeCommit, makeEvents, makeRun, runStarted, uniqueId } from "../contracts/RunStore.js"

const adminUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const requirePostgres = process.env.FIBERGRAPH_REQUIRE_POSTGRES === "1"

/** A short retry policy, so tests that expect a connection failure stay fast. */
const quickRetry = Schedule.exponential("10 millis").pipe(Schedule.intersect(Schedule.recurs(2)))

const adminClient = PgClient.make({ url: Redacted.make(adminUrl), maxConnections: 2, connectTimeout: "3 seconds" })

const serverProblem = await Effect.runPromise(
  adminClient.pipe(
    Effect.zipRight(Effect.succeed(undefined)),
    Effect.catchAll((error) => Effect.succeed(String(error.cause ?? error.message))),
    Effect.scoped,
    Effect.provide(Reactivity.layer)
  )
)
const skipServer = serverProblem !== undefined && !requirePostgres
if (skipServer) {
  console.warn(
    `Store: skipping the Postgres server tests: ${Store.redact(adminUrl)} is not reachable (${serverProblem}); ` +
      "set DATABASE_URL, or FIBERGRAPH_REQUIRE_POSTGRES=1 to make them fail instead"
  )
}

/** A new, empty database on the server for one test, dropped (with its connections) when the test ends. */
const freshDatabase = Effect.gen(function*() {
  const admin = yield* adminClient
  const name = `fibergraph_store_${randomUUID().replaceAll("-", "")}`
  yield* Effect.acquireRelease(
    admin`CREATE DATABASE ${admin(name)}`,
    () => Effect.orDie(admin`DROP DATABASE IF EXISTS ${admin(name)} WITH (FORCE)`)
  )
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return { name, url: url.toString(), admin }
}).pipe(Effect.provide(Reactivity.layer))

const tempDir = Effect.acquireRelease(
  Effect.promise(() => NodeFs.mkdtemp(NodePath.join(NodeOs.tmpdir(), "fibergraph-store-"))),
  (dir) => Effect.promise(() => NodeFs.rm(dir, { recursive: true, force: true }))
)

/** Opens a store in the current scope. */
const open = (options: Store.Options) =>
  Effect.map(Layer.build(Store.layer(options)), (context) => Context.get(context, Store.Store))

/** The error opening a store fails with. */
const openError = (options: Store.Options) => Effect.flip(Effect.scoped(open(options)))

/** Creates a run with its first event and checkpoint through the port. */
const createRun = (store: Store.Store["Type"], label: string) =>
  Effect.gen(function*() {
    const run = makeRun({ runId: uniqueId(label) })
    const result = yield* store.runStore.create(run, [runStarted(run)], makeCheckpoint(run.runId, 1, 0))
    assert.isTrue(result.created)
    return result.run
  })

const expectParsed = (url: string) => {
  const parsed = Store.parse(url)
  if (Either.isLeft(parsed)) assert.fail(`expected ${url} to parse, got: ${parsed.left.message}`)
  return parsed.right
}

const expectRejected = (url: string) => {
  const parsed = Store.parse(url)
  if (Either.isRight(parsed)) assert.fail(`expected ${url} to be rejected, got ${JSON.stringify(parsed.right)}`)
  assert.strictEqual(parsed.left._tag, "StoreUrlError")
  return parsed.left
}

const acceptedSchemes = ["postgres://", "postgresql://", "pglite://", "memory://"]

describe("Store.parse", () => {
  it("reads a server URL, keeping the real connection string redacted and masking the password", () => {
    const url = "postgres://app:s3cret%2Fpw@db.example.com:6543/fibergraph?sslmode=require"
    const parsed = expectParsed(url)
    assert.strictEqual(parsed.kind, "postgres")
    if (parsed.kind !== "postgres") return
    assert.strictEqual(parsed.host, "db.example.com")
    assert.strictEqual(parsed.port, 6543)
    assert.strictEqual(parsed.database, "fibergraph")
    assert.strictEqual(parsed.user, "app")
    assert.strictEqual(parsed.url, "postgres://app:***@db.example.com:6543/fibergraph?sslmode=require")
    assert.strictEqual(Redacted.value(parsed.connectionString), url)
    assert.notInclude(JSON.stringify(parsed), "s3cret")
    assert.notInclude(String(parsed.connectionString), "s3cret")
  })

  it("accepts postgresql://, the default port, IPv6 hosts, socket hosts and a Redacted URL", () => {
    const plain = expectParsed("postgresql://127.0.0.1/test")
    assert.deepInclude(plain, { kind: "postgres", host: "127.0.0.1", port: 5432, database: "test", user: undefined })
    assert.deepInclude(expectParsed("postgres://[::1]:5433/db"), { host: "::1", port: 5433 })
    assert.deepInclude(expectParsed("postgres:///db?host=/var/run/postgresql"), {
      host: "/var/run/postgresql",
      database: "db"
    })
    assert.deepInclude(expectParsed("POSTGRES://h/db"), { kind: "postgres", host: "h" })
    const redacted = Store.parse(Redacted.make("postgres://u:pw@h:1234/d"))
    assert.isTrue(Either.isRight(redacted) && redacted.right.url === "postgres://u:***@h:1234/d")
  })

  it("masks a password given as a query parameter", () => {
    assert.strictEqual(expectParsed("postgres://h/db?user=u&password=hunter2").url, "postgres://h/db?user=u&password=***")
  })

  it("resolves pglite:// directories against the working directory", () => {
    assert.deepStrictEqual(expectParsed("pglite://./.fibergraph"), {
      kind: "pglite",
      url: "pglite://./.fibergraph",
      dataDir: NodePath.resolve(process.cwd(), ".fibergraph")
    })
    assert.deepInclude(expectParsed("pglite://data/store"), { dataDir: NodePath.resolve("data/store") })
    assert.deepInclude(expectParsed("pglite:///var/lib/fibergraph"), { dataDir: "/var/lib/fibergraph" })
    assert.deepInclude(expectParsed("  pglite://./x \n"), { dataDir: NodePath.resolve("x") })
  })

  it("accepts memory://", () => {
    assert.deepStrictEqual(expectParsed("memory://"), { kind: "memory", url: "memory://" })
  })

  it("rejects a bare path, showing the pglite:// form to write", () => {
    assert.strictEqual(
      expectRejected("./data").message,
      "invalid store URL \"./data\": a directory needs the pglite:// scheme: write pglite://./data " +
        "(or postgres://… for a server, memory:// for no persistence)"
    )
    assert.include(expectRejected("/var/lib/x").message, "write pglite:///var/lib/x ")
    assert.include(expectRejected("data").message, "write pglite://./data ")
    assert.include(expectRejected("../up").message, "write pglite://../up ")
  })

  it("rejects other schemes and the empty string, naming the accepted schemes", () => {
    for (const url of ["mysql://root:pw@localhost/app", "http://example.com", "", "   ", "sqlite:./db"]) {
      const error = expectRejected(url)
      for (const scheme of acceptedSchemes) assert.include(error.message, scheme, url)
    }
    assert.include(expectRejected("mysql://root:pw@localhost/app").message, "the scheme \"mysql://\" is not supported")
    assert.include(expectRejected("").message, "it is empty")
    assert.include(expectRejected("postgres:db").message, "write postgres://…")
  })

  it("rejects a bad port without showing the password", () => {
    for (const [url, port] of [["postgres://u:hunter2@h:abc/db", "abc"], ["postgres://h:99999/db", "99999"], [
      "postgres://h:0/db",
      "0"
    ], ["postgres://h:/db", ""], ["postgres://h/db?port=x", "x"]] as const) {
      const error = expectRejected(url)
      assert.include(error.reason, `the port "${port}" is not a number from 1 to 65535`, url)
      assert.notInclude(error.message, "hunter2")
      assert.notInclude(JSON.stringify(error), "hunter2")
    }
    assert.strictEqual(
      expectRejected("postgres://u:hunter2@h:abc/db").message,
      "invalid store URL \"postgres://u:***@h:abc/db\": the port \"abc\" is not a number from 1 to 65535"
    )
  })

  it("rejects a server URL without a host", () => {
    for (const url of ["postgres:///db", "postgres://u:hunter2@/db", "postgresql://"]) {
      const error = expectRejected(url)
      assert.include(error.reason, "it names no host", url)
      assert.notInclude(error.message, "hunter2")
    }
  })

  it("rejects a password with unencoded reserved characters instead of guessing the host", () => {
    const error = expectRejected("postgres://u:p@ss/w@db.example.com/app")
    assert.include(error.reason, "percent-encode reserved characters")
    assert.notInclude(error.message, "p@ss")
  })

  it("rejects pglite:// without a directory, with ~, and memory:// with a path", () => {
    assert.include(expectRejected("pglite://").reason, "write pglite://<directory>, e.g. pglite://./.fibergraph")
    assert.include(expectRejected("pglite://~/store").reason, "\"~\" is not expanded")
    assert.include(expectRejected("memory://cache").reason, "memory:// takes no path")
  })
})

describe("Store.layer", () => {
  it.effect("memory:// provides an in-memory RunStore and no SQL client", () =>
    Effect.gen(function*() {
      const store = yield* Store.Store
      assert.strictEqual(store.kind, "memory")
      assert.strictEqual(store.url, "memory://")
      assert.isTrue(Option.isNone(store.sql))
      assert.strictEqual(yield* RunStore, store.runStore)
      const run = yield* createRun(store, "memory")
      assert.deepStrictEqual(yield* (yield* RunStore).get(run.runId), run)
    }).pipe(Effect.provide(Store.layer({ url: "memory://" }))))

  it.effect("passes retainCheckpoints to the store", () =>
    Effect.gen(function*() {
      const store = yield* Store.Store
      const created = yield* createRun(store, "retain")
      const run = yield* store.runStore.acquire(created.runId)
      yield* store.runStore.commit(makeCommit(run, {
        events: makeEvents(run.runId, 2, 1, 1),
        checkpoint: makeCheckpoint(run.runId, 2, 1)
      }))
      const kept = yield* store.runStore.checkpoints(run.runId)
      assert.deepStrictEqual(kept.map((c) => c.seq), [2])
    }).pipe(Effect.provide(Store.layer({ url: "memory://", retainCheckpoints: 1 }))))

  it.effect("refuses invalid options instead of guessing", () =>
    Effect.gen(function*() {
      const pool = yield* openError({ url: "memory://", poolMax: 0 })
      assert.strictEqual(pool._tag, "StoreOpenError")
      assert.include(pool.message, "poolMax must be a positive integer, got 0")
      const retain = yield* openError({ url: "memory://", retainCheckpoints: 1.5 })
      assert.include(retain.message, "retainCheckpoints must be a positive integer, got 1.5")
    }))

  it.effect("fails with StoreUrlError for a bad URL", () =>
    Effect.gen(function*() {
      const error = yield* openError({ url: "./data" })
      assert.strictEqual(error._tag, "StoreUrlError")
      assert.include(error.message, "pglite://./data")
    }))

  it.scopedLive("an embedded store is created, migrated, and reopened with its data", () =>
    Effect.gen(function*() {
      const dir = NodePath.join(yield* tempDir, "nested", "store")
      const url = `pglite://${dir}`
      const created = yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* open({ url })
        assert.strictEqual(store.kind, "pglite")
        assert.strictEqual(store.url, url)
        const sql = Option.getOrThrow(store.sql)
        const [code, database] = yield* Effect.all([Migrations.codeVersion, Migrations.databaseVersion]).pipe(
          Effect.provideService(SqlClient.SqlClient, sql)
        )
        assert.isAbove(code, 0)
        assert.strictEqual(database, code)
        return yield* createRun(store, "embedded")
      }))
      const reopened = yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* open({ url, migrate: "check" })
        return yield* store.runStore.get(created.runId)
      }))
      assert.deepStrictEqual(reopened, created)
    }), { timeout: 120_000 })

  it.scopedLive("an embedded path that is a file fails with the reason", () =>
    Effect.gen(function*() {
      const file = NodePath.join(yield* tempDir, "not-a-dir")
      yield* Effect.promise(() => NodeFs.writeFile(file, "x"))
      const error = yield* openError({ url: `pglite://${file}` })
      assert.strictEqual(error._tag, "StoreOpenError")
      if (error._tag !== "StoreOpenError") return
      assert.strictEqual(error.kind, "pglite")
      assert.strictEqual(error.dataDir, file)
      assert.strictEqual(
        error.message,
        `cannot open the embedded store pglite://${file} (directory ${file}): ` +
          "it is a file, not a directory; point dataDir at a directory (it is created if missing)"
      )
    }))

  it.live("an unreachable server fails with StoreOpenError naming host and port, after its retries", () =>
    Effect.gen(function*() {
      const error = yield* openError({ url: "postgres://postgres:hunter2@127.0.0.1:1/test", connectRetry: quickRetry })
      assert.strictEqual(error._tag, "StoreOpenError")
      if (error._tag !== "StoreOpenError") return
      assert.deepInclude(error, { kind: "postgres", host: "127.0.0.1", port: 1, database: "test", attempts: 3 })
      assert.include(
        error.message,
        "cannot open the Postgres store postgres://postgres:***@127.0.0.1:1/test " +
          "(host 127.0.0.1, port 1, database test) after 3 attempts: connection refused"
      )
      assert.include(error.message, "start the server or fix the host and port")
      assert.notInclude(error.message, "hunter2")
      assert.notInclude(JSON.stringify(error), "hunter2")
    }))

  it.effect("by default a refused connection is tried 5 times, backing off between attempts", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(openError({ url: "postgres://postgres@127.0.0.1:1/test" }))
      let advanced = 0
      while (Option.isNone(yield* Fiber.poll(fiber))) {
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
        yield* TestClock.adjust("250 millis")
        advanced += 250
        assert.isBelow(advanced, 60_000, "the retries should end")
      }
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "StoreOpenError")
      assert.include(error.message, "after 5 attempts")
      assert.isAtLeast(advanced, 500, "attempts are spaced out, not back to back")
    }))

  it.effect("layerConfig prefers FIBERGRAPH_STORE over DATABASE_URL", () =>
    Effect.gen(function*() {
      const store = yield* Store.Store
      assert.strictEqual(store.kind, "memory")
    }).pipe(
      Effect.provide(Store.layerConfig),
      Effect.withConfigProvider(ConfigProvider.fromMap(
        new Map([["FIBERGRAPH_STORE", "memory://"], ["DATABASE_URL", "postgres://u:pw@127.0.0.1:1/x"]])
      ))
    ))

  it.effect("layerConfig names the variable a bad URL came from, without its password", () =>
    Effect.gen(function*() {
      const fromDatabaseUrl = yield* Effect.flip(Effect.scoped(Layer.build(Store.layerConfig))).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", "mysql://root:hunter2@h/app"]])))
      )
      assert.strictEqual(fromDatabaseUrl._tag, "StoreUrlError")
      assert.include(fromDatabaseUrl.message, "invalid store URL \"mysql://root:***@h/app\" (from DATABASE_URL)")
      assert.notInclude(fromDatabaseUrl.message, "hunter2")
      const fromStore = yield* Effect.flip(Effect.scoped(Layer.build(Store.layerConfig))).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["FIBERGRAPH_STORE", "./data"]])))
      )
      assert.include(fromStore.message, "(from FIBERGRAPH_STORE)")
      assert.include(fromStore.message, "pglite://./data")
    }))

  it.effect("config defaults to the embedded store in ./.fibergraph and reads the tuning variables", () =>
    Effect.gen(function*() {
      const defaults = yield* Store.config.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map())))
      assert.strictEqual(Redacted.value(defaults.url), "pglite://./.fibergraph")
      assert.deepInclude(defaults, { source: "default", migrate: "apply", poolMax: 20 })
      assert.isUndefined(defaults.retainCheckpoints)
      const tuned = yield* Store.config.pipe(Effect.withConfigProvider(ConfigProvider.fromMap(
        new Map([
          ["DATABASE_URL", "postgres://h/db"],
          ["DB_POOL_MAX", "7"],
          ["FIBERGRAPH_MIGRATE", "check"],
          ["FIBERGRAPH_RETAIN_CHECKPOINTS", "5"]
        ])
      )))
      assert.deepInclude(tuned, { source: "DATABASE_URL", poolMax: 7, migrate: "check", retainCheckpoints: 5 })
      for (
        const [name, value] of [["DB_POOL_MAX", "0"], ["FIBERGRAPH_MIGRATE", "sometimes"], [
          "FIBERGRAPH_RETAIN_CHECKPOINTS",
          "-1"
        ]]
      ) {
        const error = yield* Effect.flip(Store.config).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([[name!, value!]])))
        )
        assert.strictEqual(error._op, "InvalidData", name)
        assert.include(String(error), name!)
      }
    }))
})

describe.skipIf(skipServer)("Store on a Postgres server", () => {
  it.scopedLive("opens with a bounded pool, applies migrations, and reopening finds the same run", () =>
    Effect.gen(function*() {
      const db = yield* freshDatabase
      const created = yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* open({ url: db.url, poolMax: 2 })
        assert.strictEqual(store.kind, "postgres")
        assert.strictEqual(store.url, Store.redact(db.url))
        const sql = Option.getOrThrow(store.sql)
        const [code, database] = yield* Effect.all([Migrations.codeVersion, Migrations.databaseVersion]).pipe(
          Effect.provideService(SqlClient.SqlClient, sql)
        )
        assert.strictEqual(database, code)
        const pids = yield* Effect.all(
          Array.from({ length: 6 }, () => sql<{ pid: number }>`SELECT pg_backend_pid() AS pid, pg_sleep(0.05)`),
          { concurrency: "unbounded" }
        )
        assert.isAtMost(new Set(pids.map(([row]) => row!.pid)).size, 2, "poolMax bounds the connections")
        return yield* createRun(store, "server")
      }))
      const connections = db.admin<{ n: string }>`
        SELECT count(*) AS n FROM pg_stat_activity WHERE datname = ${db.name}`.pipe(
        Effect.map(([row]) => Number(row!.n))
      )
      let open_ = yield* connections
      for (let i = 0; open_ > 0 && i < 100; i++) {
        yield* Effect.sleep("20 millis")
        open_ = yield* connections
      }
      assert.strictEqual(open_, 0, "closing the layer closes the pool")
      const reopened = yield* Effect.scoped(Effect.gen(function*() {
        const store = yield* open({ url: db.url, migrate: "check" })
        return yield* store.runStore.get(created.runId)
      }))
      assert.deepStrictEqual(reopened, created)
    }), { timeout: 60_000 })

  it.scopedLive("migrate: \"check\" refuses a database that was never migrated, and \"skip\" opens it", () =>
    Effect.gen(function*() {
      const db = yield* freshDatabase
      const error = yield* openError({ url: db.url, migrate: "check" })
      assert.strictEqual(error._tag, "StoreOpenError")
      assert.include(error.message, `database ${db.name}`)
      assert.include(error.message, "run `fibergraph migrate`")
      const skipped = yield* Effect.scoped(Effect.map(open({ url: db.url, migrate: "skip" }), (store) => store.kind))
      assert.strictEqual(skipped, "postgres")
    }))

  it.scopedLive("a database with a newer schema than the code is refused", () =>
    Effect.gen(function*() {
      const db = yield* freshDatabase
      yield* Effect.scoped(Effect.gen(function*() {
        const sql = Option.getOrThrow((yield* open({ url: db.url })).sql)
        yield* sql`INSERT INTO fibergraph.migrations (migration_id, name) VALUES (9999, 'from_the_future')`
      }))
      for (const migrate of ["apply", "check"] as const) {
        const error = yield* openError({ url: db.url, migrate })
        assert.strictEqual(error._tag, "StoreOpenError")
        assert.include(error.message, "the database schema is at version 9999", migrate)
        assert.include(error.message, "it will not write to a newer schema", migrate)
      }
    }))

  it.scopedLive("a database that does not exist fails at once, naming it", () =>
    Effect.gen(function*() {
      const name = `fibergraph_missing_${randomUUID().replaceAll("-", "")}`
      const url = new URL(adminUrl)
      url.pathname = `/${name}`
      const error = yield* openError({ url: url.toString(), connectRetry: quickRetry })
      assert.strictEqual(error._tag, "StoreOpenError")
      if (error._tag !== "StoreOpenError") return
      assert.strictEqual(error.attempts, 1, "a missing database is not retried")
      assert.include(error.message, `database "${name}" does not exist`)
      assert.include(error.message, `createdb -h ${url.hostname}`)
    }))

  it.scopedLive("an unknown user fails at once, naming it and never the password", () =>
    Effect.gen(function*() {
      const url = new URL(adminUrl)
      url.username = "fibergraph_nobody"
      url.password = "hunter2"
      const error = yield* openError({ url: url.toString(), connectRetry: quickRetry })
      assert.strictEqual(error._tag, "StoreOpenError")
      if (error._tag !== "StoreOpenError") return
      assert.strictEqual(error.attempts, 1)
      assert.include(error.message, "fibergraph_nobody")
      assert.include(error.message, "check the user name")
      assert.notInclude(error.message, "hunter2")
    }))
})

if (serverProblem !== undefined && requirePostgres) {
  it("the Postgres server is reachable (FIBERGRAPH_REQUIRE_POSTGRES=1)", () => {
    assert.fail(`Postgres at ${Store.redact(adminUrl)} is not reachable: ${serverProblem}`)
  })
}
