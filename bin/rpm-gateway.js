#!/usr/bin/env node
// Runs the TypeScript sources directly (tsx), so the command always matches the checkout.
import { register } from 'tsx/esm/api'

register()
const { main } = await import('../src/cli/index.ts')
// Exit explicitly: a failed start may leave timers or sockets that would keep the process alive.
process.exit(await main(process.argv.slice(2)))
