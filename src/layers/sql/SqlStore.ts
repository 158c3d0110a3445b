/**
 * The SQL store: `RunStore` and `WorkQueue` over one `SqlClient`, so a submit writes its run and
 * its job in one transaction and a claim bumps the run's epoch in the same statement. Wake-ups
 * (notifications of claimable work) go over `LISTEN/NOTIFY` when the client is a `PgClient` or a
 * `PgliteClient`.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer } from "effect"
import * as CallJournal from "../../services/CallJournal.js"
import * as RunStore from "../../services/RunStore.js"
import * as WorkQueue from "../../services/WorkQueue.js"
import * as CallJournalSql from "./CallJournalSql.js"
import * as RunStoreSql from "./RunStoreSql.js"
import * as WorkQueueSql from "./WorkQueueSql.js"

/** Options of the SQL store. */
export interface Options extends RunStoreSql.Options {}

/** The ports of one SQL store. */
export interface Services {
  readonly runStore: RunStore.RunStore["Type"]
  readonly workQueue: WorkQueue.WorkQueue["Type"]
  readonly callJournal: CallJournal.CallJournal["Type"]
}

/** Builds the run store and the queue over the `SqlClient` in context (the schema must be migrated). */
export const make = (options: Options = {}): Effect.Effect<Services, never, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const runStore = RunStore.make(RunStoreSql.driver(sql, options))
    const workQueue = WorkQueue.make(WorkQueueSql.driver(sql, runStore, yield* WorkQueueSql.listener))
    return { runStore, workQueue, callJournal: CallJournal.make(CallJournalSql.driver(sql)) }
  })

/** The services as a context. */
export const toContext = (
  services: Services
): Context.Context<RunStore.RunStore | WorkQueue.WorkQueue | CallJournal.CallJournal> =>
  Context.make(RunStore.RunStore, services.runStore).pipe(
    Context.add(WorkQueue.WorkQueue, services.workQueue),
    Context.add(CallJournal.CallJournal, services.callJournal)
  )

/** `RunStore` and `WorkQueue` over the `SqlClient` in context. */
export const layer = (
  options: Options = {}
): Layer.Layer<RunStore.RunStore | WorkQueue.WorkQueue | CallJournal.CallJournal, never, SqlClient.SqlClient> =>
  Layer.effectContext(Effect.map(make(options), toContext))
