// Builds the web console (web/ -> web/dist) with Vite. With --if-missing it does nothing when a
// build is already there, so `npm start` builds it once on a fresh clone and starts fast after.
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const index = path.join(root, 'web', 'dist', 'index.html')
if (process.argv.includes('--if-missing') && existsSync(index)) process.exit(0)

let vite
try {
  vite = await import('vite')
} catch {
  console.error('The web console is not built and Vite is not installed: run `npm install`, then `npm run build:web`.')
  process.exit(process.argv.includes('--if-missing') ? 0 : 1)
}
const ifMissing = process.argv.includes('--if-missing')
const config = path.join(root, 'web', 'vite.config.ts')
if (!existsSync(config)) {
  console.error('No web console sources (web/vite.config.ts) to build.')
  process.exit(ifMissing ? 0 : 1)
}
console.error('Building the web console (web/dist) ...')
try {
  await vite.build({ configFile: config, logLevel: 'warn' })
  console.error('Built web/dist.')
} catch (err) {
  // Before `npm start`: the gateway still starts, and / says the console is not built.
  console.error(`The web console could not be built: ${err instanceof Error ? err.message : err}`)
  process.exit(ifMissing ? 0 : 1)
}
