/**
 * Runs the real command line as OS processes, compiled as it ships (`node dist/cli/main.js …`,
 * the package's `bin`): one-shot commands to their end, and a long-running `worker` whose stderr
 * (JSON log lines) is watched. `npm test` builds `dist/` first; run `npm run build` before
 * running these tests alone.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync, statSync } from "node:fs"
import * as NodePath from "node:path"
import { fileURLToPath } from "node:url"
import { Deferred, Duration, Effect, Option, type Scope } from "effect"

const root = fileURLToPath(new URL("../../", import.meta.url))
const main = "dist/cli/main.js"

const newestSource = (directory: string): { readonly path: string; readonly mtime: number } =>
  readdirSync(directory, { withFileTypes: true }).reduce(
    (newest, entry) => {
      const path = NodePath.join(directory, entry.name)
      const candidate = entry.isDirectory() ? newestSource(path) : { path, mtime: statSync(path).mtimeMs }
      return candidate.mtime > newest.mtime ? candidate : newest
    },
    { path: "", mtime: 0 }
  )

/** Dies unless `dist/` holds a build at least as new as every file of `src/`. */
export const built = Effect.sync(() => {
  const compiled = NodePath.join(root, main)
  const builtAt = (() => {
    try {
      return statSync(compiled).mtimeMs
    } catch {
      throw new Error(`${main} is missing: run \`npm run build\` first (\`npm test\` builds before it tests)`)
    }
  })()
  const source = newestSource(NodePath.join(root, "src"))
  if (source.mtime > builtAt) {
    throw new Error(`${main} is older than ${NodePath.relative(root, source.path)}: run \`npm run build\` first`)
  }
})

/** This process's environment without the variables that configure fibergraph. */
const baseEnv = () =>
  Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("FIBERGRAPH_") && name !== "DATABASE_URL")
  )

/** How a command ended. */
export interface Outcome {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs `fibergraph args…` with `env` (and none of this process's fibergraph variables); a timed-out command is killed. */
export const fibergraph = (
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string>> = {},
  timeout: Duration.DurationInput = "60 seconds"
): Effect.Effect<Outcome> =>
  Effect.zipRight(built, Effect.async<Outcome>((resume) => {
    const child = spawn(process.execPath, [main, ...args], {
      cwd: root,
      env: { ...baseEnv(), ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("close", (code, signal) => resume(Effect.succeed({ code, signal, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new Error(`fibergraph ${args.join(" ")} did not end within ${Duration.format(Duration.decode(timeout))}`)
    }),
    Effect.orDie
  )

/** Parses the command's stdout as JSON (dies with the output when it is not). */
export const json = <A = any>(outcome: Outcome): A => {
  try {
    return JSON.parse(outcome.stdout) as A
  } catch {
    throw new Error(`expected JSON on stdout, got ${JSON.stringify(outcome.stdout)} (exit ${outcome.code}; stderr ${outcome.stderr})`)
  }
}

/** A running `fibergraph worker`. */
export interface WorkerProcess {
  readonly child: ChildProcess
  /** The port of its HTTP endpoints, from its `HttpListening` log line. */
  readonly port: number
  /** Its stderr so far. */
  readonly stderr: () => string
  /** Resolves when it exits. */
  readonly exited: Deferred.Deferred<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

/** The JSON log lines of a worker's stderr that parse. */
export const logLines = (stderr: string): ReadonlyArray<{ readonly message: unknown; readonly annotations?: Record<string, unknown> }> =>
  stderr.split("\n").flatMap((line) => {
    try {
      const parsed = JSON.parse(line) as unknown
      return typeof parsed === "object" && parsed !== null && "message" in parsed ? [parsed as { message: unknown }] : []
    } catch {
      return []
    }
  })

/**
 * Starts `fibergraph worker args…` and waits until it serves HTTP; the scope SIGKILLs it if it is
 * still running when the scope closes.
 */
export const startWorker = (
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string>> = {}
): Effect.Effect<WorkerProcess, Error, Scope.Scope> =>
  Effect.gen(function*() {
    yield* built
    const exited = yield* Deferred.make<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>()
    const listening = yield* Deferred.make<number>()
    let stderr = ""
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, [main, "worker", ...args], {
          cwd: root,
          env: { ...baseEnv(), ...env },
          stdio: ["ignore", "pipe", "pipe"]
        })
      ),
      (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
    )
    child.stdout.resume()
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
      const line = logLines(stderr).find((l) => l.annotations?.["event"] === "HttpListening")
      const port = line?.annotations?.["port"]
      if (typeof port === "number") Deferred.unsafeDone(listening, Effect.succeed(port))
    })
    child.on("exit", (code, signal) => Deferred.unsafeDone(exited, Effect.succeed({ code, signal })))
    const port = yield* Effect.raceFirst(
      Deferred.await(listening).pipe(Effect.map(Option.some)),
      Deferred.await(exited).pipe(Effect.as(Option.none<number>()))
    ).pipe(Effect.timeout("60 seconds"), Effect.orElseSucceed(() => Option.none<number>()))
    if (Option.isNone(port)) {
      return yield* Effect.fail(new Error(`the worker did not start serving HTTP; exit ${child.exitCode}, stderr:\n${stderr}`))
    }
    return { child, port: port.value, stderr: () => stderr, exited } satisfies WorkerProcess
  })

/** A GET against the worker's HTTP endpoints. */
export const get = (port: number, path: string) =>
  Effect.tryPromise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`)
    return { status: response.status, contentType: response.headers.get("content-type"), body: await response.text() }
  })
