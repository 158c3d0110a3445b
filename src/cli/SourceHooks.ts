/**
 * Module resolution hooks for a compiled command line that loads a TypeScript graph module from
 * a source checkout: an import that resolves into this package's `src/` gets the compiled module
 * of `dist/` instead, so the graphs and the runtime share one copy of each class (`NodeInterrupt`,
 * the errors) rather than one from each tree. Registered by `main.ts` with `module.register`,
 * after tsx, only when the graph module is TypeScript.
 */
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"

/** Where the sources and the compiled modules of this package live (file URLs ending in `/`). */
export interface Trees {
  readonly src: string
  readonly dist: string
}

interface ResolveResult {
  readonly url: string
  readonly format?: string | null | undefined
}

type NextResolve = (specifier: string, context: unknown) => Promise<ResolveResult>

let trees: Trees | undefined

/** Receives the two trees from `module.register`'s `data`. */
export const initialize = (data: Trees): void => {
  trees = data
}

/** Resolves as the next hook does, then swaps a module of `src/` for its compiled twin in `dist/`. */
export const resolve = async (specifier: string, context: unknown, next: NextResolve): Promise<ResolveResult> => {
  const resolved = await next(specifier, context)
  if (trees === undefined || !resolved.url.startsWith(trees.src)) return resolved
  const compiled = trees.dist + resolved.url.slice(trees.src.length).replace(/\.[mc]?tsx?$/, ".js")
  return existsSync(fileURLToPath(compiled)) ? { url: compiled, format: "module" } : resolved
}
