#!/usr/bin/env node
// The `keypool` command as installed: the compiled CLI (`npm run build` writes dist/), plain
// JavaScript, no TypeScript at run time. In this repository the tests run the sources through
// keypool-dev.js instead (not published).
import '../dist/esm/main.js';
