#!/usr/bin/env bash
# Install keypool's public packages the way a user does, into DIR, a project outside this workspace:
# `npm pack` of every public package (after `npm run build`), then `npm install` of the tarballs with
# production dependencies only. No workspace links, no tsx, no TypeScript sources: what lands in
# DIR/node_modules is what the npm registry would serve. The Dockerfile's build stage runs this to
# make the image's /app; test/packaging.unit.test.ts runs it to use the packages as a stranger would.
#
#   scripts/pack-install.sh DIR        (DIR is created; DIR/tarballs holds the .tgz files)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$(mkdir -p "$1" && cd "$1" && pwd)"
mkdir -p "$dest/tarballs"

cd "$root"
npm run --silent build
# the public workspaces: every packages/*/package.json without "private": true
mapfile -t public < <(node -e '
  const { readdirSync, readFileSync, existsSync } = require("node:fs");
  for (const d of readdirSync("packages")) {
    const f = `packages/${d}/package.json`;
    if (existsSync(f) && !JSON.parse(readFileSync(f, "utf8")).private) console.log(`--workspace=packages/${d}`);
  }')
# --ignore-scripts: prepack would build each package again; the build above is fresh
npm pack --loglevel=warn --ignore-scripts --pack-destination "$dest/tarballs" "${public[@]}" >/dev/null

# Every @keypool/* dependency, direct or not, comes from these tarballs (overrides), never the registry.
node -e '
  const { readdirSync, writeFileSync } = require("node:fs");
  const deps = {};
  for (const t of readdirSync(process.argv[1] + "/tarballs")) {
    const m = /^keypool-(.+)-\d+\.\d+\.\d+.*\.tgz$/.exec(t);
    if (m) deps[`@keypool/${m[1]}`] = `file:tarballs/${t}`;
  }
  const manifest = { name: "keypool-installed", private: true, dependencies: deps, overrides: deps };
  writeFileSync(process.argv[1] + "/package.json", JSON.stringify(manifest, null, 2) + "\n");
' "$dest"
cd "$dest"
npm install --omit=dev --no-audit --no-fund --prefer-offline --loglevel=error
