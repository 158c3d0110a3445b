/**
 * How the SQL backends treat database failures: a failure a caller cannot act on becomes a
 * defect naming the operation; connection loss, conflicts and cancelled statements are transient
 * and retried by the operations that may retry (a fenced commit, a claim).
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect, Schedule } from "effect"

const isSqlError = (error: unknown): error is SqlError => (error as { _tag?: string } | null)?._tag === "SqlError"

/** `effect` with its `SqlError`s turned into defects that say which operation failed (`"RunStore.commit"`). */
export const orDie = (operation: string) =>
<A, E, R>(effect: Effect.Effect<A, E | SqlError, R>): Effect.Effect<A, Exclude<E, SqlError>, R> =>
  Effect.catchIf(
    effect,
    (e): e is Extract<E | SqlError, SqlError> => isSqlError(e),
    (e) => Effect.die(new Error(`${operation}: ${(e as SqlError).message}`, { cause: e }))
  ) as Effect.Effect<A, Exclude<E, SqlError>, R>

/** The SQLSTATE (or driver error code) under a `SqlError`, `""` when there is none. */
export const codeOf = (error: SqlError): string => {
  const cause = error.cause as { readonly code?: unknown } | undefined
  return typeof cause?.code === "string" ? cause.code : ""
}

/**
 * Connection loss, serialization failures, deadlocks and cancelled statements: worth retrying a
 * fenced commit or a claim for. A cancel (57014) can hit a statement nobody interrupted: the
 * driver's `pg_cancel_backend` for an interrupted statement that had already finished lands on
 * the next statement of that pooled connection (Effect-TS/effect#8068).
 */
export const isTransient = (error: unknown): boolean => {
  if (!isSqlError(error)) return false
  const code = codeOf(error)
  const message = error.cause instanceof Error ? error.cause.message : ""
  if (code === "" && /Connection terminated|Connection error|connection is closed/i.test(message)) return true
  return code.startsWith("08") || code === "40001" || code === "40P01" || code === "57P01" || code === "57014" ||
    code === "ECONNRESET" || code === "ECONNREFUSED" || code === "EPIPE"
}

/** A unique-key violation (23505). */
export const isUniqueViolation = (error: SqlError): boolean => codeOf(error) === "23505"

/** Full-jitter exponential backoff for transient failures: 25 ms doubling, capped at 1 s, 5 retries. */
export const transientRetry = Schedule.exponential("25 millis").pipe(
  Schedule.modifyDelay((d) => Duration.millis(Math.min(Duration.toMillis(d), 1000))),
  Schedule.jitteredWith({ min: 0, max: 1 }),
  Schedule.intersect(Schedule.recurs(5))
)
