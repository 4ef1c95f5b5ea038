# rpm-gateway container image. `docker compose up --build` builds it (see README.md,
# "Run the whole stack with Docker"); on its own:
#   docker build -t rpm-gateway .
#   docker run -p 8883:8883 -p 8080:8080 -v rpm-data:/data rpm-gateway

# ---- build: install dependencies (better-sqlite3 compiles from source) -------------------------
FROM node:20-bookworm-slim AS build

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# package.json's "allowScripts" (the install scripts of better-sqlite3 and esbuild) needs npm 11;
# Node 20 images ship npm 10.
RUN npm install -g npm@11

WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
# The web console: built here with Vite (a dev dependency), served from web/dist at runtime.
COPY web ./web
COPY scripts/build-web.mjs ./scripts/build-web.mjs
RUN node scripts/build-web.mjs
# tsx (and with it esbuild) is a runtime dependency: bin/rpm-gateway.js runs the TypeScript
# sources through it. Only typescript, vitest and the @types packages are pruned.
RUN npm prune --omit=dev

# ---- runtime -----------------------------------------------------------------------------------
FROM node:20-bookworm-slim

ENV NODE_ENV=production
WORKDIR /app

# Application files stay owned by root: the gateway cannot modify its own code.
COPY --from=build /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY rules ./rules
COPY device-simulator ./device-simulator
COPY --from=build /app/web/dist ./web/dist

# The data directory: database, keys, the development CA. Created here owned by `node` with mode
# 0700 so that a new named volume mounted on it starts with that owner and mode.
RUN mkdir -p /data && chown node:node /data && chmod 700 /data

# Off loopback the HTTP server serves HTTPS with the gateway's own certificate (the development
# CA in /data/tls/ca.pem unless mqtt.tls is configured). The certificate names localhost, the
# container's hostname and RPM_MQTT_SERVER_NAMES: `gateway` is the docker-compose service name.
ENV RPM_DATA_DIR=/data
ENV RPM_HTTP_HOST=0.0.0.0
ENV RPM_MQTT_SERVER_NAMES=gateway,localhost

USER node
VOLUME /data

# 8883: MQTT over TLS; 8080: HTTPS (REST API, WebSockets, MQTT over WebSocket, /healthz, /metrics)
EXPOSE 8883 8080

# No curl in the slim image: a Node one-liner. HTTPS with the gateway's own certificate off
# loopback (not verified: this only asks whether the server answers), plain HTTP on loopback.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const h=process.env.RPM_HTTP_HOST||'127.0.0.1',l=['127.0.0.1','::1','localhost'].includes(h);require(l?'http':'https').get({host:['0.0.0.0','::'].includes(h)?'127.0.0.1':h,port:Number(process.env.RPM_HTTP_PORT||8080),path:'/healthz',rejectUnauthorized:false,timeout:4000},(r)=>process.exit(r.statusCode===200?0:1)).on('timeout',()=>process.exit(1)).on('error',()=>process.exit(1))"]

# Exec form: node gets SIGTERM directly and the gateway commits what it has received before exiting.
CMD ["node", "bin/rpm-gateway.js", "start"]
