# keypool: the gateway (`keypool serve`) and the worker (`keypool worker`), compiled JavaScript only.
#
# Stage 1 builds every public package and installs them the way a user does:
# scripts/pack-install.sh runs `npm run build`, `npm pack`s each package and `npm install`s the
# tarballs into /app with production dependencies only. Stage 2 ships that /app/node_modules and
# nothing else: no TypeScript sources, no tsx, no dev dependencies, no compile step at start.
# test/packaging.unit.test.ts runs the same script and starts the same ENTRYPOINT from its result,
# so what this image runs is tested without a Docker engine.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.base.json tsconfig.build.json ./
COPY packages ./packages
COPY scripts/build.ts scripts/pack-install.sh ./scripts/
RUN npm ci --ignore-scripts
RUN scripts/pack-install.sh /app

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules ./node_modules
COPY examples ./examples
USER node
EXPOSE 8080
ENTRYPOINT ["node", "node_modules/@keypool/cli/bin/keypool.js"]
CMD ["serve", "--config", "/etc/keypool/keypool.yaml"]
