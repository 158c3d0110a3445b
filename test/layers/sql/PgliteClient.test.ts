import { SqlClient } from "@effect/sql"
import { assert, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Fiber, Layer, Option, Ref, Stream } from "effect"
import * as ChildProcess from "node:child_process"
import * as NodeFs from "node:fs/promises"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import * as PgliteClient from "../../../src/layers/sql/PgliteClient.js"

const Template = PgliteClient.layerTemplate({
  setup: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE EXTENSION IF NOT EXISTS vector`
    yield* sql`CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, data jsonb)`
    yield* sql`CREATE TABLE counters (id text PRIMARY KEY, value integer NOT NULL)`
    yield* sql`INSERT INTO counters (id, value) VALUES ('shared', 0)`
    yield* sql`CREATE TABLE docs (id integer PRIMARY KEY, embedding vector(3) NOT NULL)`
    yield* sql`INSERT INTO items (name) VALUES ('from-template')`
  })
})

const Clone = PgliteClient.layerFromTemplate()

const tempDir = Effect.acquireRelease(
  Effect.promise(() => NodeFs.mkdtemp(NodePath.join(NodeOs.tmpdir(), "fibergraph-pglite-"))),
  (dir) => Effect.promise(() => NodeFs.rm(dir, { recursive: true, force: true }))
)

const openError = (options: PgliteClient.PgliteClientConfig) =>
  Effect.flip(Effect.scoped(Layer.build(PgliteClient.layer(options))))

const itemNames = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => sql<{ name: string }>`SELECT name FROM items ORDER BY id`.pipe(Effect.map((rows) => rows.map((r) => r.name)))
)

it.layer(Template, { timeout: "120 seconds" })("PgliteClient", (it) => {
  it.effect("binds parameters, so SQL-hostile strings are stored verbatim", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const hostile = [
        "O'Reilly",
        "'; drop table items; --",
        "\"quoted\" \\ back\\slash",
        "$1 ${x} ? :name",
        "ünïcødé 🚀"
      ]
      for (const name of hostile) {
        yield* sql`INSERT INTO items (name) VALUES (${name})`
      }
      const found = yield* sql<{ name: string }>`SELECT name FROM items WHERE name = ${"'; drop table items; --"}`
      assert.deepStrictEqual(found.map((r) => r.name), ["'; drop table items; --"])
      assert.deepStrictEqual(yield* itemNames, ["from-template", ...hostile])
    }).pipe(Effect.provide(Clone)))

  it.effect("compiles sql.insert, sql.in and identifiers like server Postgres", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const inserted = yield* sql<{ id: number; name: string }>`INSERT INTO ${sql("items")} ${
        sql.insert([{ name: "a" }, { name: "b" }, { name: "c" }])
      } RETURNING id, name`
      assert.deepStrictEqual(inserted.map((r) => r.name), ["a", "b", "c"])
      const picked = yield* sql<{ name: string }>`SELECT name FROM items WHERE ${
        sql.in("name", ["a", "c", "missing"])
      } ORDER BY name`
      assert.deepStrictEqual(picked.map((r) => r.name), ["a", "c"])
      const byId = yield* sql<{ name: string }>`SELECT name FROM items WHERE id IN ${sql.in([inserted[1]!.id])}`
      assert.deepStrictEqual(byId.map((r) => r.name), ["b"])
      const [count] = yield* sql<{ n: string }>`SELECT count(*) AS n FROM items`
      assert.strictEqual(count!.n, "4", "bigint comes back as a string, as with node-postgres")
    }).pipe(Effect.provide(Clone)))

  it.effect("round-trips JSON and JSONB", () =>
    Effect.gen(function*() {
      const pg = yield* PgliteClient.PgliteClient
      const value = { text: "it's \"quoted\"", nested: { list: [1, 2.5, null, true] }, unicode: "ü" }
      yield* pg`INSERT INTO items (name, data) VALUES ('json', ${pg.json(value)})`
      yield* pg`INSERT INTO items ${pg.insert({ name: "object-param", data: value })}`
      const rows = yield* pg<{ data: unknown }>`SELECT data FROM items WHERE data IS NOT NULL ORDER BY id`
      assert.deepStrictEqual(rows.map((r) => r.data), [value, value])
      const [json] = yield* pg<{ j: unknown }>`SELECT ${pg.json(value)}::json AS j`
      assert.deepStrictEqual(json!.j, value)
    }).pipe(Effect.provide(Clone)))

  it.effect("supports raw, values, unprepared and multi-statement execution", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const values = yield* sql`SELECT ${1}::int AS a, ${"x"} AS b`.values
      assert.deepStrictEqual(values, [[1, "x"]])
      const raw = (yield* sql`SELECT name FROM items`.raw) as { readonly rows: ReadonlyArray<unknown> }
      assert.deepStrictEqual(raw.rows, [{ name: "from-template" }])
      const unprepared = yield* sql`SELECT ${2}::int AS n`.unprepared
      assert.deepStrictEqual(unprepared, [{ n: 2 }])
      const multi = yield* sql.unsafe("INSERT INTO items (name) VALUES ('m1'); SELECT name FROM items ORDER BY id")
      assert.deepStrictEqual(multi as ReadonlyArray<unknown>, [[], [{ name: "from-template" }, { name: "m1" }]])
      const streamed = yield* Stream.runCollect(sql<{ name: string }>`SELECT name FROM items ORDER BY id`.stream)
      assert.deepStrictEqual(Chunk.toReadonlyArray(streamed).map((r) => r.name), ["from-template", "m1"])
    }).pipe(Effect.provide(Clone)))

  it.effect("turns database errors into SqlError carrying the Postgres message and code", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const error = yield* Effect.flip(sql`SELECT * FROM no_such_table`)
      assert.strictEqual(error._tag, "SqlError")
      assert.include(error.message, "relation \"no_such_table\" does not exist")
      assert.include(error.message, "42P01")
      assert.isDefined(error.cause)
      const duplicate = yield* Effect.flip(sql`INSERT INTO counters (id, value) VALUES ('shared', 1)`)
      assert.include(duplicate.message, "23505")
    }).pipe(Effect.provide(Clone)))

  it.effect("commits a transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql.withTransaction(Effect.all([
        sql`INSERT INTO items (name) VALUES ('t1')`,
        sql`INSERT INTO items (name) VALUES ('t2')`
      ]))
      assert.deepStrictEqual(yield* itemNames, ["from-template", "t1", "t2"])
    }).pipe(Effect.provide(Clone)))

  it.effect("rolls a failed transaction back completely", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const result = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO items (name) VALUES ('lost-1')`
        yield* sql`UPDATE counters SET value = 42`
        return yield* Effect.fail("boom" as const)
      })).pipe(Effect.flip)
      assert.strictEqual(result, "boom")
      assert.deepStrictEqual(yield* itemNames, ["from-template"])
      const [counter] = yield* sql<{ value: number }>`SELECT value FROM counters`
      assert.strictEqual(counter!.value, 0)
    }).pipe(Effect.provide(Clone)))

  it.effect("rolls a nested transaction back to its savepoint and keeps the outer writes", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO items (name) VALUES ('outer-before')`
        const inner = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO items (name) VALUES ('inner')`
          return yield* Effect.fail("inner failed" as const)
        })).pipe(Effect.flip)
        assert.strictEqual(inner, "inner failed")
        yield* sql.withTransaction(sql`INSERT INTO items (name) VALUES ('inner-ok')`)
        yield* sql`INSERT INTO items (name) VALUES ('outer-after')`
      }))
      assert.deepStrictEqual(yield* itemNames, ["from-template", "outer-before", "inner-ok", "outer-after"])
    }).pipe(Effect.provide(Clone)))

  it.effect("runs concurrent transactions one at a time, so read-modify-write never loses an update", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const increment = sql.withTransaction(Effect.gen(function*() {
        const [row] = yield* sql<{ value: number }>`SELECT value FROM counters WHERE id = 'shared'`
        yield* Effect.yieldNow()
        yield* sql`UPDATE counters SET value = ${row!.value + 1} WHERE id = 'shared'`
      }))
      const reader = sql`SELECT value FROM counters`.pipe(Effect.repeatN(49))
      yield* Effect.all([Effect.repeatN(increment, 49), Effect.repeatN(increment, 49), reader], {
        concurrency: "unbounded",
        discard: true
      })
      const [counter] = yield* sql<{ value: number }>`SELECT value FROM counters WHERE id = 'shared'`
      assert.strictEqual(counter!.value, 100)
    }).pipe(Effect.provide(Clone)))

  it.effect("serves waiters in arrival order, so back-to-back statements cannot starve a transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const done = yield* Ref.make(0)
      const busy = yield* sql`SELECT 1`.pipe(
        Effect.zipRight(Ref.update(done, (n) => n + 1)),
        Effect.repeatN(199),
        Effect.fork
      )
      yield* Effect.yieldNow()
      const doneWhenTransactionRan = yield* sql.withTransaction(Ref.get(done))
      yield* Fiber.join(busy)
      assert.isBelow(doneWhenTransactionRan, 10)
    }).pipe(Effect.provide(Clone)))

  it.effect("an interrupted waiter gives up its place without blocking the next one", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const inTransaction = yield* Deferred.make<void>()
      const finish = yield* Deferred.make<void>()
      const holder = yield* sql.withTransaction(
        sql`INSERT INTO items (name) VALUES ('held')`.pipe(
          Effect.zipRight(Deferred.succeed(inTransaction, undefined)),
          Effect.zipRight(Deferred.await(finish))
        )
      ).pipe(Effect.fork)
      yield* Deferred.await(inTransaction)
      const waiter = yield* sql`INSERT INTO items (name) VALUES ('interrupted')`.pipe(Effect.fork)
      const next = yield* sql`INSERT INTO items (name) VALUES ('next')`.pipe(Effect.fork)
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiter)
      yield* Deferred.succeed(finish, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.join(next)
      assert.deepStrictEqual(yield* itemNames, ["from-template", "held", "next"])
    }).pipe(Effect.provide(Clone)))

  it.effect("stores pgvector embeddings and orders by distance", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const docs = [
        { id: 1, embedding: JSON.stringify([1, 0, 0]) },
        { id: 2, embedding: JSON.stringify([0, 1, 0]) },
        { id: 3, embedding: JSON.stringify([0.9, 0.1, 0]) }
      ]
      yield* sql`INSERT INTO docs ${sql.insert(docs)}`
      const query = JSON.stringify([1, 0.05, 0])
      const nearest = yield* sql<{ id: number; distance: number }>`
        SELECT id, embedding <-> ${query}::vector AS distance FROM docs ORDER BY embedding <-> ${query}::vector`
      assert.deepStrictEqual(nearest.map((r) => r.id), [1, 3, 2])
      assert.isBelow(nearest[0]!.distance, nearest[1]!.distance)
      const [stored] = yield* sql<{ embedding: string }>`SELECT embedding FROM docs WHERE id = 3`
      assert.strictEqual(stored!.embedding, "[0.9,0.1,0]")
    }).pipe(Effect.provide(Clone)))

  it.effect("clones are isolated from each other and from the template", () =>
    Effect.gen(function*() {
      const template = yield* PgliteClient.PgliteTemplate
      const write = Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO items (name) VALUES ('only-in-first')`
        return yield* itemNames
      }).pipe(Effect.provide(Clone))
      assert.deepStrictEqual(yield* write, ["from-template", "only-in-first"])
      assert.deepStrictEqual(yield* Effect.provide(itemNames, Clone), ["from-template"])
      assert.deepStrictEqual(yield* PgliteClient.PgliteTemplate, template)
    }))

  it.effect("delivers notifications, quoting channel names and honouring rollback", () =>
    Effect.gen(function*() {
      const pg = yield* PgliteClient.PgliteClient
      const channel = "Run-Wake \"odd\"; name"
      const received = yield* Effect.scoped(Effect.gen(function*() {
        const payloads = yield* pg.subscribe(channel)
        yield* pg.withTransaction(Effect.zipRight(pg.notify(channel, "rolled back"), Effect.fail("abort"))).pipe(
          Effect.ignore
        )
        yield* pg.notify("other", "elsewhere")
        yield* pg.withTransaction(pg.notify(channel, "committed"))
        yield* pg.notify(channel, "it's \"plain\"")
        return yield* Stream.runCollect(Stream.take(payloads, 2))
      }))
      assert.deepStrictEqual(Chunk.toReadonlyArray(received), ["committed", "it's \"plain\""])
      const listeners = yield* pg<{ channel: string }>`SELECT pg_listening_channels() AS channel`
      assert.deepStrictEqual(listeners, [], "UNLISTEN runs when the subscription's scope closes")
    }).pipe(Effect.provide(Clone)))

  it.effect("listen streams payloads once the stream runs", () =>
    Effect.gen(function*() {
      const pg = yield* PgliteClient.PgliteClient
      const fiber = yield* pg.listen("wake").pipe(Stream.take(1), Stream.runCollect, Effect.fork)
      yield* pg.notify("wake", "ping").pipe(
        Effect.zipRight(Fiber.poll(fiber)),
        Effect.repeat({ until: Option.isSome })
      )
      assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Fiber.join(fiber)), ["ping"])
    }).pipe(Effect.provide(Clone)))

  it.scoped("persists to a data directory across close and reopen, and releases its lock", () =>
    Effect.gen(function*() {
      const dataDir = NodePath.join(yield* tempDir, "store")
      yield* Effect.scoped(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`INSERT INTO items (name) VALUES ('durable')`
        const again = yield* openError({ dataDir })
        assert.include(again.reason, "already open in this process")
      }).pipe(Effect.provide(PgliteClient.layerFromTemplate({ dataDir }))))
      const lockFiles = (yield* Effect.promise(() => NodeFs.readdir(dataDir))).filter((f) => f === "fibergraph.lock")
      assert.deepStrictEqual(lockFiles, [])
      const names = yield* Effect.provide(itemNames, PgliteClient.layer({ dataDir }))
      assert.deepStrictEqual(names, ["from-template", "durable"])
    }))

  it.scoped("refuses a data directory locked by another live process, and takes over a stale lock", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDir
      const lockPath = NodePath.join(dataDir, "fibergraph.lock")
      yield* Effect.promise(() => NodeFs.writeFile(lockPath, `${process.ppid}\n${NodeOs.hostname()}\n`))
      const locked = yield* openError({ dataDir })
      assert.strictEqual(locked._tag, "PgliteOpenError")
      assert.include(locked.reason, `in use by process ${process.ppid}`)

      const deadPid = ChildProcess.spawnSync(process.execPath, ["-e", ""]).pid
      yield* Effect.promise(() => NodeFs.writeFile(lockPath, `${deadPid}\n${NodeOs.hostname()}\n`))
      const names = yield* Effect.provide(itemNames, PgliteClient.layerFromTemplate({ dataDir }))
      assert.deepStrictEqual(names, ["from-template"])
    }))

  it.scoped("explains why a data directory cannot be opened", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const file = NodePath.join(root, "a-file")
      yield* Effect.promise(() => NodeFs.writeFile(file, "not a database"))
      const isFile = yield* openError({ dataDir: file })
      assert.strictEqual(isFile._tag, "PgliteOpenError")
      assert.strictEqual(isFile.dataDir, file)
      assert.include(isFile.message, `cannot open the embedded store at ${file}: it is a file, not a directory`)

      const underFile = yield* openError({ dataDir: NodePath.join(file, "db") })
      assert.include(underFile.reason, "part of its path is a file, not a directory")

      const readOnly = NodePath.join(root, "read-only")
      yield* Effect.promise(() => NodeFs.mkdir(readOnly, { mode: 0o555 }))
      assert.include((yield* openError({ dataDir: readOnly })).reason, "not writable")

      const foreign = NodePath.join(root, "foreign")
      yield* Effect.promise(() => NodeFs.mkdir(foreign))
      yield* Effect.promise(() => NodeFs.writeFile(NodePath.join(foreign, "notes.txt"), "mine"))
      assert.include((yield* openError({ dataDir: foreign })).reason, "not empty and holds no database")

      const damaged = NodePath.join(root, "damaged")
      yield* Effect.promise(() => NodeFs.mkdir(damaged))
      yield* Effect.promise(() => NodeFs.writeFile(NodePath.join(damaged, "PG_VERSION"), "17\n"))
      const damagedError = yield* openError({ dataDir: damaged })
      assert.include(damagedError.reason, "PostgreSQL failed to start on it")
      assert.include(damagedError.reason, "PostgreSQL 17 data directory")

      const template = yield* PgliteClient.PgliteTemplate
      const seeded = yield* openError({ dataDir: damaged, loadDataDir: template.snapshot })
      assert.include(seeded.reason, "already holds a database")
    }))
})
