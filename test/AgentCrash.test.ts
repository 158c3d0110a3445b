/**
 * An agent loop of ten model calls (nine tool turns and the answer) in a real process, against
 * the fake provider in its own process, SIGKILLed twice in the middle of the loop and resumed by
 * new processes: the provider sees every completed call exactly once (only a call in flight at
 * the kill may be sent again), every completed tool call runs once, and the run's usage counts
 * every call once.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Random } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../", import.meta.url))
const serverUrl = process.env["DATABASE_URL"]

interface Outcome {
  readonly killed: boolean
  readonly code: number | null
  readonly lines: ReadonlyArray<any>
  readonly stdout: string
  readonly stderr: string
}

const lines = (path: string): Array<any> =>
  existsSync(path) ? readFileSync(path, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l)) : []

/** Spawns a process and resolves when it ends; with `killAt`, SIGKILLs it once `killAt()` says so (polled every 2 ms). */
const run = (args: ReadonlyArray<string>, killAt?: () => boolean) =>
  Effect.async<Outcome>((resume) => {
    const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", ...args], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    let killed = false
    child.stdout!.setEncoding("utf8").on("data", (c: string) => (stdout += c))
    child.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c))
    const timer = killAt === undefined ? undefined : setInterval(() => {
      if (!killed && killAt()) {
        killed = true
        child.kill("SIGKILL")
      }
    }, 2)
    child.on("close", (code) => {
      clearInterval(timer)
      const parsed = stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
      resume(Effect.succeed({ killed, code, lines: parsed, stdout, stderr }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** The fake provider as its own process: its OpenAI URL, and a finalizer that stops it. */
const provider = (dir: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly child: ChildProcess; readonly url: string }>((resume) => {
      writeFileSync(
        join(dir, "script.json"),
        JSON.stringify({
          loop: { toolCall: { name: "step", arguments: { n: "{{index}}" } }, times: 9, final: { text: "all done" }, countBy: "toolResults" }
        })
      )
      const child = spawn(process.execPath, [
        "--import",
        "tsx",
        "test/support/fake-provider-main.ts",
        join(dir, "script.json"),
        join(dir, "requests.jsonl")
      ], { cwd: root, stdio: ["ignore", "pipe", "inherit"] })
      let out = ""
      child.stdout!.setEncoding("utf8").on("data", (c: string) => {
        out += c
        const line = out.split("\n").find((l) => l.startsWith("{"))
        if (line !== undefined) resume(Effect.succeed({ child, url: JSON.parse(line).openaiUrl as string }))
      })
    }),
    ({ child }) => Effect.sync(() => child.kill("SIGTERM"))
  )

/** How many messages a request sent: identifies the call (the conversation grows by two per tool turn). */
const callOf = (request: any): number => {
  const input = request.body?.input ?? request.body?.messages
  return Array.isArray(input) ? input.length : -1
}

const scenario = (engine: "embedded" | "server") =>
  Effect.gen(function*() {
    const dir = mkdtempSync(join(tmpdir(), "fibergraph-agent-crash-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    const { url } = yield* provider(dir)
    const store = engine === "server" ? serverUrl! : `pglite://${join(dir, "data")}`
    const runId = `agent-crash-${engine}-${randomUUID()}`
    const requests = join(dir, "requests.jsonl")
    const tools = join(dir, "tools.jsonl")
    const child = (mode: string) => ["test/crash/agent-child.ts", store, runId, mode, url, tools]

    const outcomes: Array<Outcome> = []
    let mode = "start"
    for (let kill = 0; kill < 2; kill++) {
      const before = lines(requests).length
      const after = before + (yield* Random.nextIntBetween(2, 4))
      const delay = yield* Random.nextIntBetween(0, 15)
      let reachedAt: number | undefined
      const outcome = yield* run(child(mode), () => {
        if (reachedAt === undefined && lines(requests).length >= after) reachedAt = Date.now()
        return reachedAt !== undefined && Date.now() - reachedAt >= delay
      })
      outcomes.push(outcome)
      assert.isTrue(outcome.killed, `process ${kill + 1} was killed mid-loop: ${outcome.stderr}`)
      mode = "resume"
    }
    const last = yield* run(child("resume"))
    const result = last.lines.find((l) => l._tag === "result")
    assert.strictEqual(last.code, 0, `${last.stderr}\n${JSON.stringify(last.lines)}`)
    assert.strictEqual(result?.status, "completed")
    assert.strictEqual(result?.state.answer, "all done")
    assert.strictEqual(result?.journalRows, 0, "the journal is pruned once the run ends")
    assert.notMatch(last.stdout, /level=(ERROR|WARN)/, "the resumed run logs no error")

    const sent = lines(requests).map(callOf)
    const counts = new Map<number, number>()
    for (const call of sent) counts.set(call, (counts.get(call) ?? 0) + 1)
    const repeated = [...counts.entries()].filter(([, n]) => n > 1)
    assert.isAtMost(repeated.length, outcomes.length, `only a call in flight at a kill is sent again: ${JSON.stringify(sent)}`)
    assert.isTrue(repeated.every(([, n]) => n === 2), JSON.stringify(sent))
    const distinct = counts.size
    const conversation: ReadonlyArray<any> = result.state.messages
    const modelCalls = conversation.filter((m) => m.role === "assistant").length
    assert.strictEqual(modelCalls, distinct, "every model call of the final conversation reached the provider")
    assert.strictEqual(modelCalls, 10, "nine tool turns and the answer, whatever the kills interrupted")

    const toolRuns = lines(tools).map((t) => t.n as string)
    const toolCounts = new Map<string, number>()
    for (const n of toolRuns) toolCounts.set(n, (toolCounts.get(n) ?? 0) + 1)
    assert.strictEqual(toolCounts.size, 9, "every tool turn ran")
    assert.isAtMost([...toolCounts.values()].filter((n) => n > 1).length, outcomes.length, JSON.stringify(toolRuns))

    assert.strictEqual(result.usage.total.tokens, modelCalls * 15, "each call's usage counted once")
    console.log(`agent crash (${engine}): ${sent.length} requests for ${distinct} calls, ${toolRuns.length} tool runs for 9 turns`)
  })

describe("agent loop under SIGKILL, with real processes", () => {
  it.scoped("embedded: completed model and tool calls are never sent again after a resume", () =>
    scenario("embedded"), { timeout: 120_000 })

  it.scoped.skipIf(serverUrl === undefined)(
    "server: completed model and tool calls are never sent again after a resume",
    () => scenario("server"),
    { timeout: 120_000 }
  )
})
