/**
 * The fake provider as its own OS process: `tsx test/support/fake-provider-main.ts <script.json> <requests.jsonl>`.
 * It reads a `FakeScriptJson` from the script file, prints `{"url","openaiUrl","anthropicUrl","pid"}` as one JSON
 * line on stdout once it listens, appends every request it receives (secrets removed) as a JSON line to the
 * log file before answering it, and runs until SIGTERM or SIGINT.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import * as Fs from "node:fs"
import * as FakeProvider from "./FakeProvider.js"

const [scriptPath, logPath] = process.argv.slice(2)

const program = Effect.gen(function*() {
  if (scriptPath === undefined || logPath === undefined) {
    return yield* Effect.dieMessage("usage: fake-provider-main <script.json> <requests.jsonl>")
  }
  const script = JSON.parse(Fs.readFileSync(scriptPath, "utf8")) as FakeProvider.FakeScriptJson
  Fs.writeFileSync(logPath, "")
  const server = yield* FakeProvider.start(FakeProvider.fromJson(script), {
    ...(script.apiKey === undefined ? {} : { apiKey: script.apiKey }),
    onRequest: (request) => Fs.appendFileSync(logPath, `${JSON.stringify(request)}\n`)
  })
  yield* Console.log(JSON.stringify({
    url: server.url,
    openaiUrl: server.openaiUrl,
    anthropicUrl: server.anthropicUrl,
    pid: process.pid
  }))
  return yield* Effect.never
})

NodeRuntime.runMain(Effect.scoped(program))
