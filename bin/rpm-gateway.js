#!/usr/bin/env node
// Runs the TypeScript sources directly (tsx), so the command always matches the checkout.
import { register } from 'tsx/esm/api'

register()
const { main } = await import('../src/cli/index.ts')
process.exitCode = await main(process.argv.slice(2))
