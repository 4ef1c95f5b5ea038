// Builds the web console: web/ -> web/dist (npm run build:web). JSX is compiled for Preact from
// web/tsconfig.json ("jsx": "react-jsx", "jsxImportSource": "preact"), which Vite's oxc
// transform reads; no framework plugin is needed.
//
// Development: `npx vite --config web/vite.config.ts` serves the console with /api (REST and the
// /api/v1/ws WebSocket) proxied to a running gateway, RPM_GATEWAY_URL (http://127.0.0.1:8080).
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'

const gateway = process.env.RPM_GATEWAY_URL ?? 'http://127.0.0.1:8080'

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  publicDir: 'public',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // One chunk, loaded by a module script: nothing to preload.
    modulePreload: { polyfill: false },
    // One small bundle: the console is a single screen-set, loaded once per sign-in.
    assetsInlineLimit: 2048,
  },
  server: {
    port: Number(process.env.RPM_WEB_PORT ?? 5173),
    strictPort: true,
    proxy: {
      '/api': { target: gateway, changeOrigin: false, ws: true },
    },
  },
  preview: {
    proxy: {
      '/api': { target: gateway, changeOrigin: false, ws: true },
    },
  },
})
