/**
 * Test support for the embedded store: one migrated PGlite template per test file (a fresh
 * PGlite takes seconds to initialise), cloned cheaply for each suite or test.
 */
import { Layer } from "effect"
import * as Migrations from "../../src/layers/sql/Migrations.js"
import * as PgliteClient from "../../src/layers/sql/PgliteClient.js"

/** A template database with the fibergraph schema migrated. */
export const MigratedTemplate = PgliteClient.layerTemplate({ setup: Migrations.migrate })

/** A fresh migrated embedded database, cloned from the template. */
export const migratedClone = PgliteClient.layerFromTemplate().pipe(Layer.provide(MigratedTemplate))
