/**
 * The WorkQueue contract on the SQL queue, on the embedded database and the Postgres server,
 * through `SqlStore.layer` (the store the application opens); on the embedded database also
 * through the separate `WorkQueueSql` and `RunStoreSql` layers.
 */
import { describe } from "@effect/vitest"
import { Layer } from "effect"
import * as RunStoreSql from "../../../src/layers/sql/RunStoreSql.js"
import * as SqlStore from "../../../src/layers/sql/SqlStore.js"
import * as WorkQueueSql from "../../../src/layers/sql/WorkQueueSql.js"
import { workQueueContract } from "../../contracts/WorkQueue.js"
import { migratedClone } from "../../support/Pglite.js"
import * as Postgres from "../../support/Postgres.js"

workQueueContract("WorkQueueSql (embedded, SqlStore)", SqlStore.layer().pipe(Layer.provide(migratedClone)), {
  timeout: "120 seconds"
})

workQueueContract(
  "WorkQueueSql (embedded, separate layers)",
  WorkQueueSql.layer.pipe(Layer.provideMerge(RunStoreSql.layer()), Layer.provide(migratedClone)),
  { timeout: "120 seconds" }
)

describe.runIf(Postgres.available)("server", () => {
  workQueueContract("WorkQueueSql (server, SqlStore)", SqlStore.layer().pipe(Layer.provide(Postgres.migratedDatabase())), {
    timeout: "60 seconds"
  })
})
