/**
 * Worker processes of the chaos and partition tests, as real OS processes
 * (`node --import tsx test/chaos/worker.ts …`): spawned into a scope (SIGKILLed when it closes),
 * signalled (SIGKILL, SIGSTOP/SIGCONT, the pause request), drained with SIGTERM, and read line by
 * line.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Deferred, Duration, Effect, Either, FiberId, Option, Schema } from "effect"
import { Line, type Options, pauseSignal } from "./Protocol.js"

const root = fileURLToPath(new URL("../../", import.meta.url))
const program = fileURLToPath(new URL("./worker.ts", import.meta.url))
const decodeLine = Schema.decodeUnknownEither(Schema.parseJson(Line))

/** A worker process could not be started. */
export class WorkerStartError extends Schema.TaggedError<WorkerStartError>()("WorkerStartError", {
  app: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `chaos worker ${this.app} did not start: ${this.detail}`
  }
}

/** How a worker process ended. */
export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** One worker process. */
export interface WorkerProcess {
  readonly app: string
  readonly pid: number
  /** Its protocol lines so far (the array grows). */
  readonly lines: ReadonlyArray<Line>
  /** Its other stdout lines (logs). */
  readonly noise: ReadonlyArray<string>
  readonly stderr: () => string
  readonly exited: Deferred.Deferred<Exited>
  /** Whether it is still alive (not yet exited). */
  readonly alive: () => boolean
  /** Sends a signal if it is still alive. */
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<boolean>
  /** Asks it to stop itself just before its next step commit. */
  readonly requestPause: Effect.Effect<boolean>
  /** The first line from index `from` on that matches, or none within `timeout`. */
  readonly waitFor: <L extends Line>(
    from: number,
    match: (line: Line) => line is L,
    timeout: Duration.DurationInput
  ) => Effect.Effect<Option.Option<L>>
}

const start = (url: string, app: string, options: Options) =>
  Effect.async<WorkerProcess, WorkerStartError>((resume) => {
    const child: ChildProcess = spawn(
      process.execPath,
      ["--import", "tsx", program, url, app, JSON.stringify(options)],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] }
    )
    const lines: Array<Line> = []
    const noise: Array<string> = []
    const listeners = new Set<() => void>()
    const exited = Deferred.unsafeMake<Exited>(FiberId.none)
    let stderr = ""
    let pending = ""
    let settled = false
    let dead = false

    const proc: WorkerProcess = {
      app,
      pid: child.pid ?? -1,
      lines,
      noise,
      stderr: () => stderr,
      exited,
      alive: () => !dead,
      signal: (signal) => Effect.sync(() => !dead && child.kill(signal)),
      requestPause: Effect.sync(() => !dead && child.kill(pauseSignal)),
      waitFor: <L extends Line>(from: number, match: (line: Line) => line is L, timeout: Duration.DurationInput) =>
        Effect.async<L>((resumeWait) => {
          let index = from
          const check = () => {
            while (index < lines.length) {
              const line = lines[index++]!
              if (match(line)) {
                listeners.delete(check)
                resumeWait(Effect.succeed(line))
                return
              }
            }
          }
          listeners.add(check)
          check()
          return Effect.sync(() => listeners.delete(check))
        }).pipe(Effect.timeoutOption(timeout))
    }

    const fail = (detail: string) => {
      if (settled) return
      settled = true
      child.kill("SIGKILL")
      resume(Effect.fail(new WorkerStartError({ app, detail })))
    }
    const onLine = (text: string) => {
      const decoded = decodeLine(text)
      if (Either.isLeft(decoded)) {
        noise.push(text)
        return
      }
      const line = decoded.right
      lines.push(line)
      if (!settled && line._tag === "ready") {
        settled = true
        resume(Effect.succeed(proc))
      } else if (!settled && line._tag === "error") {
        fail(line.message)
      }
      for (const listener of [...listeners]) listener()
    }
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      pending += chunk
      let newline = pending.indexOf("\n")
      while (newline >= 0) {
        onLine(pending.slice(0, newline))
        pending = pending.slice(newline + 1)
        newline = pending.indexOf("\n")
      }
    })
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk
    })
    child.on("error", (error) => fail(`cannot spawn: ${error.message}`))
    child.on("exit", (code, signal) => {
      dead = true
      Deferred.unsafeDone(exited, Effect.succeed({ code, signal }))
      fail(`exited (${code ?? signal}) before it was ready: ${stderr}${noise.join("\n")}`)
    })
    return Effect.sync(() => {
      child.kill("SIGKILL")
    })
  })

/** Starts a worker process and waits until it claims work; it is SIGKILLed when the scope closes. */
export const spawnWorker = (url: string, app: string, options: Options) =>
  Effect.acquireRelease(
    start(url, app, options).pipe(
      Effect.timeoutFail({
        duration: "60 seconds",
        onTimeout: () => new WorkerStartError({ app, detail: "not ready within 60 s" })
      })
    ),
    (proc) => kill(proc)
  )

/** SIGKILLs a worker (stopped or not) and waits for it to exit. */
export const kill = (proc: WorkerProcess) =>
  Effect.gen(function*() {
    yield* proc.signal("SIGKILL")
    return yield* Deferred.await(proc.exited)
  })

/** Drains a worker with SIGTERM (its in-flight steps may commit); SIGKILLs it after `grace`. */
export const drain = (proc: WorkerProcess, grace: Duration.DurationInput = "8 seconds") =>
  Effect.gen(function*() {
    yield* proc.signal("SIGCONT")
    yield* proc.signal("SIGTERM")
    const exited = yield* Deferred.await(proc.exited).pipe(Effect.timeoutOption(grace))
    return Option.isSome(exited) ? exited.value : yield* kill(proc)
  })

/** How many lines of a worker's logs mention a lost claim. */
export const claimsLost = (proc: WorkerProcess) => proc.noise.filter((line) => line.includes("claim lost")).length
