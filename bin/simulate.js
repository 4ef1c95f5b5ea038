#!/usr/bin/env node
import { register } from 'tsx/esm/api'

register()
const { main } = await import('../device-simulator/cli.ts')
process.exit(await main(process.argv.slice(2)))
