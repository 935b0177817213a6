#!/usr/bin/env node
// The `keypool` command. The sources are TypeScript run as they are (no build step): tsx compiles
// them on import. tsconfig: false because the caller's directory may hold an unrelated
// tsconfig.json that tsx would otherwise apply; these sources need none.
import { register } from 'tsx/esm/api';

register({ tsconfig: false });
await import('../src/main.ts');
