/**
 * The `fibergraph` command line: `migrate`, `worker`, `submit` and `runs …` (see docs/cli.md).
 * Results go to stdout, logs (JSON lines) and errors to stderr. Exit codes: 0 ok, 1 error,
 * 2 usage, 3 not found, 4 corruption, 5 conflict.
 */
import { Command, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Exit, Layer, Logger, Option } from "effect"
import { exitCode } from "./ExitCode.js"
import * as Migrate from "./Migrate.js"
import * as Runs from "./Runs.js"
import * as Submit from "./Submit.js"
import * as WorkerCommand from "./Worker.js"

const fibergraph = Command.make("fibergraph").pipe(
  Command.withDescription("a durable graph runtime for LLM agents and workflows"),
  Command.withSubcommands([Migrate.command, WorkerCommand.command, Submit.command, Runs.command])
)

const cli = Command.run(fibergraph, { name: "fibergraph", version: "0.1.0" })

const Logging = Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.jsonLogger))

const main = Effect.suspend(() => cli(process.argv)).pipe(
  Effect.exit,
  Effect.flatMap((exit) =>
    Exit.isSuccess(exit)
      ? Effect.void
      : Effect.gen(function*() {
        const failure = Cause.failureOption(exit.cause)
        const error = Option.getOrUndefined(failure)
        if (!ValidationError.isValidationError(error)) {
          const message = (error as { readonly message?: unknown } | undefined)?.message
          yield* Console.error(typeof message === "string" ? message : Cause.pretty(exit.cause))
        }
        process.exitCode = exitCode(exit.cause)
      })
  ),
  Effect.provide(Layer.mergeAll(NodeContext.layer, Logging))
)

NodeRuntime.runMain(main, { disableErrorReporting: true, disablePrettyLogger: true })
