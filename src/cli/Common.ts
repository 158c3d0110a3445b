/**
 * What the commands share: the `--store`, `--graphs` and `--json` options, option parsers (JSON,
 * durations, positive integers) and the layers a command runs on (composed in `layers/Main.ts`).
 */
import { Options, ValidationError } from "@effect/cli"
import * as HelpDoc from "@effect/cli/HelpDoc"
import { Config, Duration, Effect, Option } from "effect"
import * as Main from "../layers/Main.js"
import type * as Store from "../layers/Store.js"

/** `--store URL`, falling back to `FIBERGRAPH_STORE`, `DATABASE_URL`, then `pglite://./.fibergraph`. */
export const storeOption = Options.text("store").pipe(
  Options.withPseudoName("URL"),
  Options.withDescription(
    "store URL: postgres://…, pglite://<dir> or memory:// (default: FIBERGRAPH_STORE, DATABASE_URL, pglite://./.fibergraph)"
  ),
  Options.optional
)

/** `--graphs PATH`, falling back to `FIBERGRAPH_GRAPHS`: the module that exports the graphs. */
export const graphsOption = Options.text("graphs").pipe(
  Options.withPseudoName("PATH"),
  Options.withDescription(
    "the graph module (a .ts or .js file exporting `graphs`, and optionally `layer`) (default: FIBERGRAPH_GRAPHS)"
  ),
  Options.withFallbackConfig(Config.string("FIBERGRAPH_GRAPHS")),
  Options.optional
)

/** `--json`: machine-readable output. */
export const jsonOption = Options.boolean("json").pipe(Options.withDescription("print the result as JSON"))

const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

/** Parses a JSON option value; invalid JSON is a usage error that names the option. */
export const parseJson = (option: string) => (text: string): Effect.Effect<unknown, ValidationError.ValidationError> =>
  Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (error) =>
      invalid(`--${option} is not valid JSON (${error instanceof Error ? error.message : String(error)}): ${text}`)
  })

const shortDuration = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/

/** Parses `500ms`, `30s`, `5m`, `1h` or Effect's `"30 seconds"` form. */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const short = shortDuration.exec(text.trim())
  if (short !== null) {
    const amount = Number(short[1])
    switch (short[2]) {
      case "ms":
        return Option.some(Duration.millis(amount))
      case "s":
        return Option.some(Duration.seconds(amount))
      case "m":
        return Option.some(Duration.minutes(amount))
      default:
        return Option.some(Duration.hours(amount))
    }
  }
  return Duration.decodeUnknown(text.trim())
}

/** A duration option (`--lease 30s`) with a configuration fallback and a default. */
export const durationOption = (name: string, variable: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription(`${description} (e.g. 500ms, 30s, 5m) (env: ${variable})`),
    Options.withFallbackConfig(Config.string(variable)),
    Options.optional,
    Options.mapEffect((text) =>
      Option.match(text, {
        onNone: () => Effect.succeed(Option.none<Duration.Duration>()),
        onSome: (value) =>
          Option.match(parseDuration(value), {
            onNone: () => Effect.fail(invalid(`--${name} ${JSON.stringify(value)} is not a duration; write e.g. 500ms, 30s or 5m`)),
            onSome: (duration) => Effect.succeed(Option.some(duration))
          })
      })
    )
  )

/** Fails unless the option's value is an integer from `min` to `max`. */
export const integerIn = (name: string, min: number, max = Number.MAX_SAFE_INTEGER) => (value: number) =>
  Number.isInteger(value) && value >= min && value <= max
    ? Effect.succeed(value)
    : Effect.fail(
      invalid(`--${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`}, got ${value}`)
    )

/** The store named by `--store` or the environment; `migrate` overrides `FIBERGRAPH_MIGRATE` when given. */
export const storeLayer = (url: Option.Option<string>, migrate?: Store.MigrateMode) => Main.store({ url, migrate })

/** Everything a command needs to submit, answer and inspect runs: the store, its queue, a runner. */
export const runtimeLayer = (url: Option.Option<string>, migrate?: Store.MigrateMode) => Main.layer({ url, migrate })
