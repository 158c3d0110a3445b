/**
 * The WorkQueue contract on the SQL queue, on the embedded database and the Postgres server.
 */
import { describe } from "@effect/vitest"
import { Layer } from "effect"
import * as RunStoreSql from "../../../src/layers/sql/RunStoreSql.js"
import * as WorkQueueSql from "../../../src/layers/sql/WorkQueueSql.js"
import { workQueueContract } from "../../contracts/WorkQueue.js"
import { migratedClone } from "../../support/Pglite.js"
import * as Postgres from "../../support/Postgres.js"

const queueOn = <E>(database: Layer.Layer<import("@effect/sql/SqlClient").SqlClient, E>) =>
  WorkQueueSql.layer.pipe(Layer.provideMerge(RunStoreSql.layer()), Layer.provide(database))

workQueueContract("WorkQueueSql (embedded)", queueOn(migratedClone), { timeout: "120 seconds" })

describe.runIf(Postgres.available)("server", () => {
  workQueueContract("WorkQueueSql (server)", queueOn(Postgres.migratedDatabase()), { timeout: "60 seconds" })
})
