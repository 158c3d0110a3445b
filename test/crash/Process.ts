/**
 * Runs the crash-test child as a real OS process (`node --import tsx test/crash/child.ts …`) and
 * SIGKILLs it at a chosen point: as its n-th step commit is sent, right after its n-th commit
 * returned, or some milliseconds after its run started.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Duration, Effect, Either, Schema } from "effect"
import { type Engine, Line, markersVariable, type Mode } from "./Protocol.js"

/** Where to SIGKILL a child; counts and delays are per process. */
export type KillPoint =
  | { readonly _tag: "DuringCommit"; readonly n: number }
  | { readonly _tag: "AfterCommit"; readonly n: number }
  | { readonly _tag: "AfterDelay"; readonly millis: number }

/** A kill point as a reader would say it. */
export const describeKill = (kill: KillPoint) =>
  kill._tag === "DuringCommit"
    ? `during commit ${kill.n}`
    : kill._tag === "AfterCommit"
    ? `right after commit ${kill.n}`
    : `${kill.millis} ms into the run`

/** How a child ended. */
export interface ChildOutcome {
  readonly pid: number | undefined
  readonly lines: ReadonlyArray<Line>
  /** Lines on stdout that are not protocol lines (logs). */
  readonly noise: ReadonlyArray<string>
  readonly stderr: string
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  /** Whether the parent SIGKILLed it (its kill point came before its end). */
  readonly killed: boolean
  /**
   * The last protocol line read before the parent sent SIGKILL (or before the child ended). Lines
   * read after the kill are still in `lines`: the child wrote them before it died, they were
   * only still in the pipe.
   */
  readonly last: Line | undefined
  /** Milliseconds from the spawn to the `ready` line: starting Node, loading the code, opening the store. */
  readonly openMillis: number | undefined
  /** Milliseconds from the `started` line to the `result` line, for a child that ran to the end. */
  readonly runMillis: number | undefined
}

/** A child could not be run, or did not end in time. */
export class ChildError extends Schema.TaggedError<ChildError>()("ChildError", {
  runId: Schema.String,
  mode: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `crash-test child (${this.mode} ${this.runId}): ${this.detail}`
  }
}

const root = fileURLToPath(new URL("../../", import.meta.url))
const program = fileURLToPath(new URL("./child.ts", import.meta.url))
const decodeLine = Schema.decodeUnknownEither(Schema.parseJson(Line))

/** Options of one child. */
export interface ChildOptions {
  readonly engine: Engine
  /** The data directory (embedded) or the database URL (server). */
  readonly location: string
  readonly runId: string
  readonly mode: Mode
  readonly kill?: KillPoint | undefined
  readonly timeout?: Duration.DurationInput
}

/** Runs one child to its end or its kill point; an interrupted (or timed-out) wait kills the child. */
export const runChild = (options: ChildOptions): Effect.Effect<ChildOutcome, ChildError> =>
  Effect.async<ChildOutcome, ChildError>((resume) => {
    const { engine, kill, location, mode, runId } = options
    const spawnedAt = performance.now()
    const child = spawn(process.execPath, ["--import", "tsx", program, engine, location, runId, mode], {
      cwd: root,
      env: { ...process.env, [markersVariable]: "1" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    const lines: Array<Line> = []
    const noise: Array<string> = []
    let stderr = ""
    let pending = ""
    let killed = false
    let lastBeforeKill: Line | undefined
    let timer: NodeJS.Timeout | undefined
    let startedAt: number | undefined
    let runMillis: number | undefined
    let openMillis: number | undefined

    const sigkill = () => {
      if (killed || child.exitCode !== null || child.signalCode !== null) return
      lastBeforeKill = lines.at(-1)
      killed = child.kill("SIGKILL")
    }
    const onLine = (text: string) => {
      const decoded = decodeLine(text)
      if (Either.isLeft(decoded)) {
        noise.push(text)
        return
      }
      const line = decoded.right
      lines.push(line)
      if (killed) return
      switch (line._tag) {
        case "ready":
          openMillis = performance.now() - spawnedAt
          break
        case "started":
          startedAt = performance.now()
          if (kill?._tag === "AfterDelay") timer = setTimeout(sigkill, kill.millis)
          break
        case "commit":
          if (kill?._tag === "DuringCommit" && kill.n === line.n) sigkill()
          break
        case "committed":
          if (kill?._tag === "AfterCommit" && kill.n === line.n) sigkill()
          break
        case "result":
          if (startedAt !== undefined) runMillis = performance.now() - startedAt
          break
      }
    }
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      pending += chunk
      let newline = pending.indexOf("\n")
      while (newline >= 0) {
        onLine(pending.slice(0, newline))
        pending = pending.slice(newline + 1)
        newline = pending.indexOf("\n")
      }
    })
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk
    })
    child.on("error", (error) => {
      clearTimeout(timer)
      resume(Effect.fail(new ChildError({ runId, mode, detail: `cannot spawn: ${error.message}` })))
    })
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      const ready = lines.find((l) => l._tag === "ready")
      resume(Effect.succeed({
        pid: ready?._tag === "ready" ? ready.pid : child.pid,
        lines,
        noise,
        stderr,
        code,
        signal,
        killed,
        last: killed ? lastBeforeKill : lines.at(-1),
        openMillis,
        runMillis
      }))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  }).pipe(
    Effect.timeoutFail({
      duration: options.timeout ?? "60 seconds",
      onTimeout: () =>
        new ChildError({ runId: options.runId, mode: options.mode, detail: `did not end within ${Duration.format(Duration.decode(options.timeout ?? "60 seconds"))}` })
    })
  )
