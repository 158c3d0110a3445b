/**
 * The command line's exit codes, from the failure a command ended with: 0 ok, 1 error, 2 usage,
 * 3 not found, 4 corruption, 5 conflict.
 */
import { ValidationError } from "@effect/cli"
import { Cause, Option } from "effect"

/** The documented exit codes. */
export const ExitCode = {
  ok: 0,
  error: 1,
  usage: 2,
  notFound: 3,
  corruption: 4,
  conflict: 5
} as const

const usageTags = new Set([
  "StoreUrlError",
  "GraphModuleError",
  "InputValidationError",
  "StateValidationError",
  "WorkerOptionsError"
])
const notFoundTags = new Set(["RunNotFoundError", "GraphNotRegisteredError"])
const corruptionTags = new Set(["EventLogCorruptionError", "SchemaVersionError"])
const conflictTags = new Set([
  "StaleClaimError",
  "EventSequenceConflictError",
  "RunStatusError",
  "GraphMismatchError",
  "LeaseLostError"
])

const tagOf = (u: unknown): string =>
  typeof u === "object" && u !== null && "_tag" in u && typeof u._tag === "string" ? u._tag : ""

/** Maps a failure to the documented exit code. */
export const exitCode = (cause: Cause.Cause<unknown>): number => {
  const failure = Cause.failureOption(cause)
  if (Option.isNone(failure)) return ExitCode.error
  const error = failure.value
  if (ValidationError.isValidationError(error)) return ExitCode.usage
  const tag = tagOf(error)
  if (usageTags.has(tag)) return ExitCode.usage
  if (notFoundTags.has(tag)) return ExitCode.notFound
  if (corruptionTags.has(tag)) return ExitCode.corruption
  if (tag === "StoreOpenError" && tagOf((error as { readonly cause?: unknown }).cause) === "SchemaVersionError") {
    return ExitCode.corruption
  }
  if (conflictTags.has(tag)) return ExitCode.conflict
  return ExitCode.error
}

