/**
 * An `EventSink` that appends every event, encoded with the `RunEvent` schema, as one JSON line
 * to a file, and `read`, which decodes such a file back into events.
 */
import { FileSystem } from "@effect/platform"
import { Effect, Layer, ParseResult, Schema, type Scope, Stream } from "effect"
import * as Events from "../../Events.js"
import { EventSink } from "../../services/EventSink.js"

/** The events file could not be opened, appended to, or read. */
export class EventFileError extends Schema.TaggedError<EventFileError>()("EventFileError", {
  path: Schema.String,
  operation: Schema.Literal("open", "append", "encode", "read"),
  reason: Schema.String
}) {
  override get message() {
    switch (this.operation) {
      case "open":
        return `cannot open event file "${this.path}" for appending: ${this.reason}; make sure its directory exists or can be created and is writable by this process, or choose another path`
      case "append":
        return `cannot append to event file "${this.path}": ${this.reason}; check the disk's free space and the file's permissions`
      case "encode":
        return `cannot encode events for "${this.path}": ${this.reason}; give interrupts, custom events and tool calls JSON-compatible payloads`
      case "read":
        return `cannot read event file "${this.path}": ${this.reason}; check that the file exists and is readable`
    }
  }
}

/** A line of an events file is not a valid JSON-encoded `RunEvent`. */
export class EventFileLineError extends Schema.TaggedError<EventFileLineError>()("EventFileLineError", {
  path: Schema.String,
  line: Schema.Number,
  reason: Schema.String
}) {
  override get message() {
    return `event file "${this.path}" line ${this.line} is not a valid event: ${this.reason}; repair or delete that line (a cut-off line is what a crash in mid-write leaves behind)`
  }
}

const newline = 10
const encoder = new TextEncoder()

const parentOf = (path: string): string => path.replace(/[\\/]+[^\\/]*$/, "")

const encodeLine = (event: Events.RunEvent): string => JSON.stringify(Events.encode(event))

/** Opens `path` for appending (creating it and its directory) and builds a sink that writes to it until the scope closes. */
export const make: (
  path: string
) => Effect.Effect<EventSink["Type"], EventFileError, FileSystem.FileSystem | Scope.Scope> = Effect.fn("EventSinkJsonLines.make")(function*(
  path: string
) {
  const fs = yield* FileSystem.FileSystem
  const opened = (reason: { readonly message: string }) => new EventFileError({ path, operation: "open", reason: reason.message })
  const parent = parentOf(path)
  if (parent !== "" && parent !== path) {
    yield* fs.makeDirectory(parent, { recursive: true }).pipe(Effect.mapError(opened))
  }
  const file = yield* fs.open(path, { flag: "a+" }).pipe(Effect.mapError(opened))
  const append = (text: string) =>
    file.writeAll(encoder.encode(text)).pipe(
      Effect.mapError((e) => new EventFileError({ path, operation: "append", reason: e.message })),
      Effect.uninterruptible
    )

  const { size } = yield* file.stat.pipe(Effect.mapError(opened))
  if (size > 0n) {
    yield* file.seek(size - 1n, "start")
    const last = yield* file.readAlloc(1).pipe(Effect.mapError(opened))
    if (last._tag === "Some" && last.value[0] !== newline) {
      yield* file.writeAll(encoder.encode("\n")).pipe(Effect.mapError(opened))
    }
  }

  const write = Effect.fn("EventSinkJsonLines.write")(function*(events: ReadonlyArray<Events.RunEvent>) {
    const lines: Array<string> = []
    const rejected: Array<string> = []
    for (const event of events) {
      try {
        lines.push(encodeLine(event))
      } catch (error) {
        rejected.push(`${event._tag} #${event.seq} of ${event.runId}: ${error instanceof Error ? error.message : String(error)}`)
      }
    }
    if (lines.length > 0) yield* append(lines.map((line) => `${line}\n`).join(""))
    if (rejected.length > 0) {
      return yield* new EventFileError({ path, operation: "encode", reason: rejected.join("; ") })
    }
  })

  return EventSink.of({ write })
})

/** Provides an `EventSink` appending to the JSON Lines file at `path`, open for the layer's lifetime. */
export const layer = (path: string): Layer.Layer<EventSink, EventFileError, FileSystem.FileSystem> =>
  Layer.scoped(EventSink, make(path))

const decodeLine = Schema.decodeEither(Schema.parseJson(Events.RunEvent))

const describe = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`)
    .join("; ")

/** The events of a JSON Lines file written by this sink, in file order; blank lines are skipped. */
export const read = (
  path: string
): Stream.Stream<Events.RunEvent, EventFileError | EventFileLineError, FileSystem.FileSystem> =>
  Stream.unwrap(Effect.map(FileSystem.FileSystem, (fs) => fs.stream(path))).pipe(
    Stream.mapError((e) => new EventFileError({ path, operation: "read", reason: e.message })),
    Stream.decodeText(),
    Stream.splitLines,
    Stream.zipWithIndex,
    Stream.filter(([text]) => text.trim() !== ""),
    Stream.mapEffect(([text, index]) => {
      const decoded = decodeLine(text)
      return decoded._tag === "Right"
        ? Effect.succeed(decoded.right)
        : Effect.fail(new EventFileLineError({ path, line: index + 1, reason: describe(decoded.left) }))
    })
  )
