/**
 * The agent example runs as a user would run it (`tsx examples/agent.ts`), against the local
 * OpenAI-speaking process through the real client, and completes with its structured ticket.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("../", import.meta.url))

describe("examples", () => {
  it.effect("examples/agent.ts: the support agent calls both tools and answers with a refund ticket", () =>
    Effect.gen(function*() {
      const { FIBERGRAPH_MODEL: _, ...env } = process.env
      const { code, stdout, stderr } = yield* Effect.async<{ code: number; stdout: string; stderr: string }>((resume) => {
        execFile(process.execPath, ["--import", "tsx", "examples/agent.ts"], {
          cwd: root,
          env: { ...env, FIBERGRAPH_STORE: "memory://" },
          timeout: 60_000
        }, (error, stdout, stderr) => resume(Effect.succeed({ code: error === null ? 0 : Number(error.code ?? 1), stdout, stderr })))
      })
      assert.strictEqual(code, 0, stderr)
      assert.include(stdout, "→ lookup_order({\"orderId\":\"A-1042\"})")
      assert.include(stdout, "→ refund_policy({\"daysSinceDelivery\":12})")
      const result = JSON.parse(stdout.slice(stdout.lastIndexOf("\n{\n") + 1))
      assert.strictEqual(result.status, "completed")
      assert.deepStrictEqual([result.ticket.category, result.ticket.refund], ["refund", true])
      assert.strictEqual(result.usage.tokens, 884)
    }), { timeout: 90_000 })
})
