import { Ajv, type AnySchema, type Options } from 'ajv'
import addFormats from 'ajv-formats'

// The options fastify uses by default, except that unknown fields are refused, not dropped.
const common: Options = { useDefaults: true, removeAdditional: false, addUsedSchema: false, allErrors: false }

interface RouteSchema {
  schema: AnySchema & { $id?: string }
  httpPart?: string
}

/**
 * Request validators for fastify's schemaController. Query strings, path parameters and headers
 * arrive as text, so their values are coerced to the declared types (`?limit=10`). A JSON body
 * already carries types: a number where a string belongs is a client error, not something to
 * convert, so bodies are validated without coercion.
 */
export function buildRequestValidator(externalSchemas: Record<string, unknown> = {}): (route: RouteSchema) => ReturnType<Ajv['compile']> {
  const strict = new Ajv({ ...common, coerceTypes: false })
  const coercing = new Ajv({ ...common, coerceTypes: true })
  for (const ajv of [strict, coercing]) {
    addFormats.default(ajv)
    for (const schema of Object.values(externalSchemas)) ajv.addSchema(schema as AnySchema)
  }
  return ({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? strict : coercing
    const known = schema.$id ? ajv.getSchema(schema.$id) : undefined
    return known ?? ajv.compile(schema)
  }
}
