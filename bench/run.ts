/**
 * Runs one benchmark workload and prints its report as one JSON line on stdout:
 * `npm run bench -- <W1|W2|W3|W5>`. A wrong result exits non-zero: a broken run measures nothing.
 */
import { Cause, Effect, Exit } from "effect"
import { BenchLayer, type Workload } from "./Harness.js"
import { W1 } from "./W1.js"
import { W2 } from "./W2.js"
import { W3 } from "./W3.js"
import { W5 } from "./W5.js"

const workloads: Record<string, Workload> = { W1, W2, W3, W5 }

const name = process.argv[2]
const workload = name === undefined ? undefined : workloads[name]

if (workload === undefined) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(workloads).join("|")}>\n`)
  process.exitCode = 2
} else {
  const exit = await Effect.runPromiseExit(workload.run.pipe(Effect.provide(BenchLayer)))
  if (Exit.isSuccess(exit)) {
    process.stdout.write(`${JSON.stringify({ ...exit.value, node: process.version })}\n`)
  } else {
    process.stderr.write(`${workload.name} failed:\n${Cause.pretty(exit.cause)}\n`)
    process.exitCode = 1
  }
}
