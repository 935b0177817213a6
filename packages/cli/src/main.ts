/** Entry of the `keypool` command (bin/keypool.js loads it): parse, run, exit. */
import { run } from './program.js';

const code = await run(process.argv.slice(2));
process.exitCode = code;
// Output is flushed when the event loop empties; a handle left open by a library must not keep a
// finished command (or a gateway that has shut down) alive.
setTimeout(() => process.exit(code), 2000).unref();
