/**
 * fibergraph as a package: `npm pack` the project (its built `dist/`, as `npm test` leaves it),
 * install the tarball into a fresh project and use it from there as a user would, with plain
 * `node`: `import { Graph, Runner, … } from "fibergraph"` runs a graph (on the embedded store, so
 * the shipped `sql/` migrations are found), the installed `fibergraph` bin answers, and a
 * TypeScript file importing "fibergraph" type-checks against the shipped declarations.
 *
 * The install is what `npm install <tarball>` lays out (the package in `node_modules/fibergraph`,
 * its bin linked in `node_modules/.bin`), done by hand: the project's dependencies come from this
 * repository's `node_modules`, linked as the parent directory's, so the test needs no registry.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as NodePath from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { built } from "./cli/Process.js"

const root = fileURLToPath(new URL("../", import.meta.url))
const exec = promisify(execFile)

/** Runs a program to its end; a non-zero exit fails with its output. */
const run = (file: string, args: ReadonlyArray<string>, cwd: string) =>
  Effect.tryPromise({
    try: () =>
      exec(file, args, {
        cwd,
        timeout: 120_000,
        maxBuffer: 16 * 1024 * 1024,
        env: { ...process.env, PATH: `${NodePath.dirname(process.execPath)}${NodePath.delimiter}${process.env["PATH"] ?? ""}` }
      }),
    catch: (error) => new Error(`${file} ${args.join(" ")} failed: ${String(error)}`)
  })

/** A directory that is removed when the scope closes. */
const tempDirectory = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(NodePath.join(tmpdir(), "fibergraph-package-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/** Packs the project into `dir` and installs the tarball into `dir/consumer`; returns the consumer's directory. */
const packAndInstall = (dir: string) =>
  Effect.gen(function*() {
    yield* built
    const npm = process.platform === "win32" ? "npm.cmd" : "npm"
    const packed = yield* run(npm, ["pack", "--ignore-scripts", "--json", "--pack-destination", dir], root)
    const [tarball] = JSON.parse(packed.stdout) as ReadonlyArray<{ readonly filename: string; readonly files: ReadonlyArray<{ readonly path: string }> }>
    assert.isDefined(tarball)
    const shipped = tarball!.files.map((f) => f.path)
    for (const path of ["package.json", "dist/index.js", "dist/index.d.ts", "dist/cli/main.js", "sql/0001_runs.sql"]) {
      assert.include(shipped, path)
    }
    assert.isFalse(shipped.some((p) => p.startsWith("test/") || p.startsWith("node_modules/")), "tests and dependencies are not shipped")

    symlinkSync(NodePath.join(root, "node_modules"), NodePath.join(dir, "node_modules"), "dir")
    const consumer = NodePath.join(dir, "consumer")
    const installed = NodePath.join(consumer, "node_modules", "fibergraph")
    mkdirSync(installed, { recursive: true })
    yield* run("tar", ["-xzf", NodePath.join(dir, tarball!.filename), "-C", installed, "--strip-components=1"], dir)
    const manifest = JSON.parse(readFileSync(NodePath.join(installed, "package.json"), "utf8")) as {
      readonly bin: Record<string, string>
    }
    const bin = NodePath.join(consumer, "node_modules", ".bin")
    mkdirSync(bin)
    for (const [name, target] of Object.entries(manifest.bin)) {
      chmodSync(NodePath.join(installed, target), 0o755)
      symlinkSync(NodePath.join("..", "fibergraph", target), NodePath.join(bin, name))
    }
    writeFileSync(NodePath.join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
    return consumer
  })

/** A user's program: a fan-out, a human approval answered in-process, the result as JSON (stdout's last line, after the logs). */
const program = `
import { Effect, Layer, Schema } from "effect"
import { CircuitBreaker, Graph, Node, Runner, State, Store } from "fibergraph"

const Review = State.define({
  topics: State.channel(Schema.Array(Schema.String)),
  notes: State.list(Schema.String),
  decision: State.channel(Schema.String, { initial: () => "pending" })
})

const graph = Graph.make({ id: "review", state: Review })
  .node("start", {}, () => Effect.succeed({}))
  .node("note", { input: Schema.String, writes: ["notes"] }, (ctx) => Effect.succeed({ notes: ["on " + ctx.input] }))
  .node("review", { writes: ["decision"] }, Node.approval({ key: "decision", payload: (s) => ({ notes: s.notes }) }))
  .edge(Graph.START, "start")
  .fanOut("start", "note", (s) => s.topics)
  .edge("note", "review")
  .edge("review", Graph.END)
  .compile

const layer = Runner.layer().pipe(
  Layer.provideMerge(Layer.merge(Store.layer({ url: "pglite://" + process.argv[2] }), CircuitBreaker.layer))
)

const main = Effect.gen(function*() {
  const g = yield* graph
  const runner = yield* Runner.Runner
  const run = yield* runner.start(g, { topics: ["tides", "moons"] })
  const waiting = yield* run.result
  yield* runner.respond(g, run.runId, { _tag: "approve" })
  const done = yield* runner.result(g, run.runId)
  return { waiting: waiting.status, payload: waiting.interrupts[0]?.payload, status: done.status, state: done.state }
})

console.log(JSON.stringify(await Effect.runPromise(Effect.provide(Effect.scoped(main), layer))))
`

/** A TypeScript user of the package, type-checked against the shipped declarations. */
const typed = `
import { Effect, Schema } from "effect"
import { Graph, State, type Errors } from "fibergraph"

const S = State.define({ n: State.counter() })
export const compiled: Effect.Effect<Graph.CompiledGraph, Errors.GraphCompileError> =
  Graph.make({ id: "typed", state: S }).node("inc", { writes: ["n"] }, () => Effect.succeed({ n: 1 })).edge(Graph.START, "inc").edge("inc", Graph.END).compile
export const wrong = Graph.make({ id: "wrong", state: S })
  // @ts-expect-error: "m" is not a key of the state
  .node("bad", { writes: ["m"] }, () => Effect.succeed({}))
export const schema = Schema.String
`

describe("the package", () => {
  it.scoped("packs, installs from its tarball, runs a graph under plain node, and ships a working bin and types", () =>
    Effect.gen(function*() {
      const dir = yield* tempDirectory
      const consumer = yield* packAndInstall(dir)

      writeFileSync(NodePath.join(consumer, "main.mjs"), program)
      const ran = yield* run(process.execPath, ["main.mjs", NodePath.join(dir, "store")], consumer)
      const last = ran.stdout.trim().split("\n").at(-1) ?? ""
      const result = JSON.parse(last) as {
        waiting: string
        payload: unknown
        status: string
        state: { topics: Array<string>; notes: Array<string>; decision: unknown }
      }
      assert.strictEqual(result.waiting, "waiting")
      assert.deepStrictEqual(result.payload, { notes: ["on tides", "on moons"] })
      assert.strictEqual(result.status, "completed")
      assert.deepStrictEqual(result.state.notes, ["on tides", "on moons"])
      assert.strictEqual(result.state.decision, "approved")

      const version = JSON.parse(readFileSync(NodePath.join(root, "package.json"), "utf8")).version as string
      const fibergraph = NodePath.join(consumer, "node_modules", ".bin", "fibergraph")
      assert.strictEqual((yield* run(fibergraph, ["--version"], consumer)).stdout.trim(), version)
      assert.strictEqual((yield* run(fibergraph, ["runs", "list", "--store", "memory://"], consumer)).stdout.trim(), "no runs")

      writeFileSync(NodePath.join(consumer, "typed.ts"), typed)
      writeFileSync(
        NodePath.join(consumer, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "NodeNext",
            moduleResolution: "NodeNext",
            strict: true,
            exactOptionalPropertyTypes: true,
            skipLibCheck: true,
            noEmit: true,
            types: []
          },
          files: ["typed.ts"]
        })
      )
      yield* run(process.execPath, [NodePath.join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], consumer)
    }), 180_000)
})
