/**
 * The RunStore contract on the SQL store, on both engines: the embedded database (a clone of a
 * migrated template) and the Postgres server (a fresh database per suite).
 */
import { describe } from "@effect/vitest"
import { Layer } from "effect"
import * as RunStoreSql from "../../../src/layers/sql/RunStoreSql.js"
import { runStoreContract } from "../../contracts/RunStore.js"
import { migratedClone } from "../../support/Pglite.js"
import * as Postgres from "../../support/Postgres.js"

runStoreContract("RunStoreSql (embedded)", RunStoreSql.layer({ retainCheckpoints: 3 }).pipe(Layer.provide(migratedClone)), {
  retainCheckpoints: 3,
  timeout: "120 seconds"
})

describe.runIf(Postgres.available)("server", () => {
  runStoreContract(
    "RunStoreSql (server)",
    RunStoreSql.layer({ retainCheckpoints: 3 }).pipe(Layer.provide(Postgres.migratedDatabase())),
    { retainCheckpoints: 3, timeout: "60 seconds" }
  )
})
