#!/usr/bin/env node
/**
 * The `fibergraph` command line: `migrate`, `worker`, `submit` and `runs …` (see docs/cli.md).
 * Results go to stdout, logs (JSON lines) and errors to stderr. Exit codes: 0 ok, 1 error,
 * 2 usage, 3 not found, 4 corruption, 5 conflict.
 *
 * Start-up is kept short: `--version` answers before anything is imported, and a command loads
 * only its own subcommand's modules (the runtime, the stores, the HTTP server are imported on
 * demand). A TypeScript graph module is loaded through tsx when the compiled command line runs.
 */
import { readFileSync } from "node:fs"
import { register } from "node:module"

const packageJson = new URL("../../package.json", import.meta.url)

/** This package's version, from its package.json (the same at `src/cli/` and `dist/cli/`). */
const version = (JSON.parse(readFileSync(packageJson, "utf8")) as { readonly version: string }).version

/** The subcommands by name, each imported only when it is the one asked for. */
const subcommands = {
  migrate: () => import("./Migrate.js").then((m) => m.command),
  worker: () => import("./Worker.js").then((m) => m.command),
  submit: () => import("./Submit.js").then((m) => m.command),
  runs: () => import("./Runs.js").then((m) => m.command)
} as const

type Name = keyof typeof subcommands

type Subcommand = Awaited<ReturnType<(typeof subcommands)[Name]>>

/** The one subcommand asked for, or all of them (for `--help`, a mistyped name, no arguments). */
const load = (name: Name | undefined): Promise<readonly [Subcommand, ...Array<Subcommand>]> =>
  name !== undefined
    ? subcommands[name]().then((command) => [command] as const)
    : Promise.all([subcommands.migrate(), subcommands.worker(), subcommands.submit(), subcommands.runs()])

const isName = (word: string): word is Name => Object.hasOwn(subcommands, word)

/**
 * The graph module the command will import: `--graphs PATH`, `--graphs=PATH`, else
 * `FIBERGRAPH_GRAPHS` (read here, before the command is parsed, only to prepare the loader).
 */
const graphsModule = (args: ReadonlyArray<string>): string | undefined => {
  const at = args.indexOf("--graphs")
  if (at >= 0) return args[at + 1]
  const inline = args.find((arg) => arg.startsWith("--graphs="))
  return inline !== undefined ? inline.slice("--graphs=".length) : process.env["FIBERGRAPH_GRAPHS"]
}

/**
 * Lets the compiled command line import a `.ts` graph module: registers tsx (a development
 * dependency; without it Node reports the unknown extension), then `SourceHooks`, which hands
 * imports of this package's `src/` their compiled `dist/` modules. Called once the command's
 * own modules are loaded: a module loaded after the hooks costs a round trip to their thread
 * (tens of megabytes over the ~1,000 modules of the runtime). Under tsx (running
 * `src/cli/main.ts`) there is nothing to do.
 */
const prepareTypeScript = async (path: string | undefined) => {
  if (path === undefined || !/\.[mc]?tsx?$/.test(path) || !import.meta.url.endsWith(".js")) return
  const tsx = await import("tsx/esm/api").catch(() => undefined)
  if (tsx === undefined) return
  tsx.register()
  register(new URL("./SourceHooks.js", import.meta.url), {
    data: { src: new URL("../../src/", import.meta.url).href, dist: new URL("../", import.meta.url).href }
  })
}

const run = async (args: ReadonlyArray<string>) => {
  const name = args.find(isName)
  const [Command, ValidationError, NodeContext, NodeRuntime, Cause, Console, Effect, Exit, Layer, Logger, Option, { exitCode }, commands] =
    await Promise.all([
      import("@effect/cli/Command"),
      import("@effect/cli/ValidationError"),
      import("@effect/platform-node/NodeContext"),
      import("@effect/platform-node/NodeRuntime"),
      import("effect/Cause"),
      import("effect/Console"),
      import("effect/Effect"),
      import("effect/Exit"),
      import("effect/Layer"),
      import("effect/Logger"),
      import("effect/Option"),
      import("./ExitCode.js"),
      load(name)
    ])
  if (name !== "migrate") await prepareTypeScript(graphsModule(args))

  const fibergraph = Command.make("fibergraph").pipe(
    Command.withDescription("a durable graph runtime for LLM agents and workflows"),
    Command.withSubcommands(commands)
  )

  const cli = Command.run(fibergraph, { name: "fibergraph", version })

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
}

const args = process.argv.slice(2)
if (args.length === 1 && args[0] === "--version") {
  process.stdout.write(`${version}\n`)
} else {
  await run(args)
}
