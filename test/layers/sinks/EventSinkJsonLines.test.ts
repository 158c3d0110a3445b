import { NodeFileSystem } from "@effect/platform-node"
import { assert, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Stream } from "effect"
import * as NodeFs from "node:fs/promises"
import * as NodeOs from "node:os"
import * as NodePath from "node:path"
import * as Events from "../../../src/Events.js"
import { EventCapture } from "../../../src/layers/sinks/EventSinkCapture.js"
import * as EventSinkJsonLines from "../../../src/layers/sinks/EventSinkJsonLines.js"
import { runnerWithMerged, runToEnd, thenCapture } from "./fixtures.js"

const tempDir = Effect.acquireRelease(
  Effect.promise(() => NodeFs.mkdtemp(NodePath.join(NodeOs.tmpdir(), "fibergraph-jsonl-"))),
  (dir) => Effect.promise(() => NodeFs.rm(dir, { recursive: true, force: true }))
)

const runnerOnFile = (path: string) =>
  runnerWithMerged(thenCapture(EventSinkJsonLines.make(path))).pipe(Layer.provide(NodeFileSystem.layer))

/** Runs the fixture graph on `topic` through a runner writing to `path`, waiting until the file has the run. */
const runOnFile = (path: string, topics: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const capture = yield* EventCapture
    const runs = yield* Effect.forEach(topics, runToEnd, { concurrency: "unbounded" })
    for (const run of runs) yield* capture.awaitEnd(run.runId)
    return runs
  }).pipe(Effect.provide(runnerOnFile(path)))

const readAll = (path: string) =>
  EventSinkJsonLines.read(path).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.provide(NodeFileSystem.layer))

it.scoped("round-trips concurrent runs through the file, creating its directory", () =>
  Effect.gen(function*() {
    const path = NodePath.join(yield* tempDir, "nested", "deeper", "events.jsonl")
    const [a, b] = yield* runOnFile(path, ["otters", "beavers"])
    const read = yield* readAll(path)
    assert.strictEqual(read.length, a!.events.length + b!.events.length)
    assert.deepStrictEqual(read.filter((e) => e.runId === a!.runId), a!.events)
    assert.deepStrictEqual(read.filter((e) => e.runId === b!.runId), b!.events)
    const text = yield* Effect.promise(() => NodeFs.readFile(path, "utf8"))
    assert.isTrue(text.endsWith("\n"))
    const lines = text.slice(0, -1).split("\n")
    assert.strictEqual(lines.length, read.length)
    assert.deepStrictEqual(JSON.parse(lines[0]!), Events.encode(read[0]!))
  }))

it.scoped("appends to an existing file across layer lifetimes", () =>
  Effect.gen(function*() {
    const path = NodePath.join(yield* tempDir, "events.jsonl")
    const [first] = yield* runOnFile(path, ["first"])
    const [second] = yield* runOnFile(path, ["second"])
    assert.deepStrictEqual(yield* readAll(path), [...first!.events, ...second!.events])
  }))

it.scoped("keeps a cut-off last line on its own line, so later events stay readable", () =>
  Effect.gen(function*() {
    const path = NodePath.join(yield* tempDir, "events.jsonl")
    const earlier = { _tag: "RunCompleted", runId: "run_earlier", seq: 9, step: 3, at: 1_700_000_000_000 } as const
    yield* Effect.promise(() => NodeFs.writeFile(path, `${JSON.stringify(earlier)}\n{"_tag":"RunSta`))
    const [run] = yield* runOnFile(path, ["after a crash"])
    const error = yield* Effect.flip(readAll(path))
    assert.strictEqual(error._tag, "EventFileLineError")
    assert.strictEqual(error._tag === "EventFileLineError" ? error.line : -1, 2)
    const text = yield* Effect.promise(() => NodeFs.readFile(path, "utf8"))
    const rest = text.split("\n").slice(2).filter((line) => line !== "")
    assert.deepStrictEqual(rest.map((line) => JSON.parse(line)), run!.events.map((e) => Events.encode(e)))
  }))

it.scoped("fails on a corrupt line with a typed error naming the file and the line", () =>
  Effect.gen(function*() {
    const path = NodePath.join(yield* tempDir, "events.jsonl")
    const good = { _tag: "RunCompleted", runId: "run_x", seq: 1, step: 0, at: 0 }
    const lines = [JSON.stringify(good), "", JSON.stringify({ ...good, seq: "two" }), JSON.stringify(good)]
    yield* Effect.promise(() => NodeFs.writeFile(path, lines.join("\n") + "\n"))
    const error = yield* Effect.flip(readAll(path))
    assert.instanceOf(error, EventSinkJsonLines.EventFileLineError)
    if (!(error instanceof EventSinkJsonLines.EventFileLineError)) return
    assert.strictEqual(error.line, 3)
    assert.strictEqual(error.path, path)
    assert.include(error.reason, "seq")
    assert.include(error.message, `"${path}" line 3`)

    yield* Effect.promise(() => NodeFs.writeFile(path, "not json\n"))
    const garbage = yield* Effect.flip(readAll(path))
    assert.strictEqual(garbage._tag === "EventFileLineError" ? garbage.line : -1, 1)
  }))

it.scoped("refuses an unwritable path when the layer is built, naming the path", () =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const blocker = NodePath.join(dir, "not-a-directory")
    yield* Effect.promise(() => NodeFs.writeFile(blocker, "a file where a directory should be"))
    const path = NodePath.join(blocker, "events.jsonl")
    const error = yield* Layer.build(EventSinkJsonLines.layer(path)).pipe(
      Effect.scoped,
      Effect.flip,
      Effect.provide(NodeFileSystem.layer)
    )
    assert.instanceOf(error, EventSinkJsonLines.EventFileError)
    assert.strictEqual(error.path, path)
    assert.strictEqual(error.operation, "open")
    assert.include(error.message, path)
    assert.include(error.message, "choose another path")
  }))

it.scoped("writes the encodable events of a batch and fails naming the one that is not JSON-compatible", () =>
  Effect.gen(function*() {
    const path = NodePath.join(yield* tempDir, "events.jsonl")
    const at = 1_700_000_000_000
    const ok = (seq: number): Events.RunEvent => ({ _tag: "StepStarted", runId: "run_b", seq, step: 0, at, nodes: ["a"] })
    const bad: Events.RunEvent = { _tag: "Custom", runId: "run_b", seq: 2, step: 0, at, node: "a", index: 0, name: "big", data: 1n }
    const sink = yield* EventSinkJsonLines.make(path).pipe(Effect.provide(NodeFileSystem.layer))
    const error = yield* Effect.flip(sink.write([ok(1), bad, ok(3)]))
    assert.instanceOf(error, EventSinkJsonLines.EventFileError)
    if (!(error instanceof EventSinkJsonLines.EventFileError)) return
    assert.strictEqual(error.operation, "encode")
    assert.include(error.reason, "Custom #2 of run_b")
    assert.deepStrictEqual(yield* readAll(path), [ok(1), ok(3)])
  }))

it.scoped("reading a missing file fails with a typed error", () =>
  Effect.gen(function*() {
    const path = NodePath.join(yield* tempDir, "missing.jsonl")
    const error = yield* Effect.flip(readAll(path))
    assert.instanceOf(error, EventSinkJsonLines.EventFileError)
    assert.strictEqual(error._tag === "EventFileError" ? error.operation : "", "read")
  }))
