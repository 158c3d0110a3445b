/**
 * Runs one benchmark workload and prints its report as one JSON line on stdout:
 * `npm run bench -- <W1|W2|W3|W4|W4b|W5|W6> [args]` (W4 takes `embedded|server|all`, W4b fleet sizes,
 * W6 the workers' poll in ms). A wrong result exits non-zero: a broken run measures nothing.
 */
import { Cause, Effect, Exit } from "effect"
import { BenchLayer, type Workload } from "./Harness.js"
import { W1 } from "./W1.js"
import { W2 } from "./W2.js"
import { W3 } from "./W3.js"
import * as W4 from "./W4.js"
import * as W4b from "./W4b.js"
import { W5 } from "./W5.js"
import * as W6 from "./W6.js"

/** Each workload by name, from the arguments after its name (`undefined` when they are not valid). */
const noArgs = (workload: Workload) => (args: ReadonlyArray<string>) => args.length === 0 ? workload : undefined
const workloads: Record<string, (args: ReadonlyArray<string>) => Workload | undefined> = {
  W1: noArgs(W1),
  W2: noArgs(W2),
  W3: noArgs(W3),
  W4: W4.parse,
  W4b: W4b.parse,
  W5: noArgs(W5),
  W6: W6.parse
}

const [name, ...args] = process.argv.slice(2)
const workload = name === undefined ? undefined : workloads[name]?.(args)

if (workload === undefined) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(workloads).join("|")}>  (W4 [embedded|server|all], W4b [sizes…], W6 [poll-ms])\n`)
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
