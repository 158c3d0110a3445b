/**
 * Every ```ts block of README.md type-checks, as a reader would paste it into a project that
 * depends on fibergraph.
 *
 * The convention (stated in the README's tour): the ```ts blocks of one `##` section form one
 * module, concatenated in order, so a block may use what an earlier block of its section declared
 * (imports included; a later block imports only the names it adds). Each section's module is
 * written to `test/.readme-tmp/` (git-ignored) and compiled with the project's strict options;
 * "fibergraph" resolves to `src/index.ts` through `paths`, so no build is needed. Errors are
 * reported at their README line.
 *
 * The tour's program (its blocks up to "Test a graph with test layers") is also run, against
 * `src/`: it must end, with the run completed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as NodePath from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import ts from "typescript"

const root = fileURLToPath(new URL("../", import.meta.url))
const scratch = NodePath.join(root, "test", ".readme-tmp")

/** One section's module: its code, and for each of its lines the README line it came from. */
interface Module {
  readonly section: string
  readonly file: string
  readonly lines: Array<string>
  readonly origin: Array<number>
  /** The `###` heading above each line ("" before the first). */
  readonly subsection: Array<string>
}

/** The README's ```ts blocks, grouped into one module per `##` section. */
const modules = (readme: string): ReadonlyArray<Module> => {
  const result: Array<Module> = []
  let current: Module | undefined
  let inBlock: "ts" | "other" | undefined
  let subsection = ""
  readme.split("\n").forEach((line, index) => {
    if (inBlock !== undefined) {
      if (line.startsWith("```")) inBlock = undefined
      else if (inBlock === "ts") {
        current!.lines.push(line)
        current!.origin.push(index + 1)
        current!.subsection.push(subsection)
      }
      return
    }
    if (line.startsWith("## ")) {
      const section = line.slice(3).trim()
      const slug = section.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")
      current = {
        section,
        file: NodePath.join(scratch, `${String(result.length).padStart(2, "0")}-${slug}.ts`),
        lines: [],
        origin: [],
        subsection: []
      }
      result.push(current)
      subsection = ""
    } else if (line.startsWith("### ")) {
      subsection = line.slice(4).trim()
    } else if (line.startsWith("```")) {
      inBlock = /^```(ts|typescript)\s*$/.test(line) ? "ts" : "other"
      if (inBlock === "ts" && current === undefined) {
        throw new Error(`README.md:${index + 1}: a ts block before the first ## section`)
      }
    }
  })
  return result.filter((m) => m.lines.length > 0)
}

const options: ts.CompilerOptions = {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  lib: ["lib.es2022.d.ts"],
  types: ["node"],
  strict: true,
  exactOptionalPropertyTypes: true,
  noImplicitOverride: true,
  skipLibCheck: true,
  esModuleInterop: true,
  isolatedModules: true,
  verbatimModuleSyntax: true,
  noEmit: true,
  baseUrl: root,
  paths: { fibergraph: ["src/index.ts"] }
}

describe("README.md", () => {
  const found = modules(readFileSync(NodePath.join(root, "README.md"), "utf8"))

  it("has ts blocks in the sections a newcomer reads first", () => {
    const sections = found.map((m) => m.section)
    for (const section of ["As a package", "A short tour", "Durable storage", "Workers"]) assert.include(sections, section)
  })

  it("every ts block type-checks against the package", () => {
    rmSync(scratch, { recursive: true, force: true })
    mkdirSync(scratch, { recursive: true })
    for (const m of found) writeFileSync(m.file, m.lines.join("\n") + "\n")
    const program = ts.createProgram(found.map((m) => m.file), options)
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const text = ts.flattenDiagnosticMessageText(d.messageText, "\n")
      const module = found.find((m) => d.file !== undefined && NodePath.resolve(d.file.fileName) === m.file)
      if (module === undefined || d.file === undefined || d.start === undefined) {
        return `${d.file?.fileName ?? "(global)"}: ${text}`
      }
      const { line } = d.file.getLineAndCharacterOfPosition(d.start)
      return `README.md:${module.origin[line] ?? "?"} (${module.section}): ${text}`
    })
    assert.deepStrictEqual(problems, [])
  }, 120_000)

  it("the tour's program runs to its end: it streams until the review, answers it, and the run completes", async () => {
    const tour = found.find((m) => m.section === "A short tour")!
    const untilTests = tour.subsection.indexOf("Test a graph with test layers")
    const source = tour.lines.slice(0, untilTests < 0 ? undefined : untilTests).join("\n")
      .replaceAll(`from "fibergraph"`, `from ${JSON.stringify(pathToFileURL(NodePath.join(root, "src", "index.ts")).href)}`)
    mkdirSync(scratch, { recursive: true })
    const file = NodePath.join(scratch, "tour-run.ts")
    writeFileSync(file, source + "\n")
    const { main } = await import(pathToFileURL(file).href) as {
      readonly main: Effect.Effect<{ readonly status: string; readonly state: Record<string, unknown> }>
    }
    const result = await Effect.runPromise(main.pipe(Effect.timeout("20 seconds")))
    assert.strictEqual(result.status, "completed")
    assert.strictEqual(result.state["decision"], "approved")
  }, 60_000)
})
