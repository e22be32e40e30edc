#!/usr/bin/env node
import { runCli } from './cli/commands.js';
import { EXIT } from '../lib/errors.js';

let done = false;
// Node exits 0 when nothing is left to wait on, even with the command's promise pending
// (a connection that died without an event): that must never read as success.
process.on('beforeExit', () => {
  if (done) return;
  process.stderr.write('ramboot: the command stopped before it finished, with nothing left to wait for (a bug: please report it with the output above)\n');
  process.exit(EXIT.FAILED);
});
runCli(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env }).then((code) => {
  done = true;
  // Interrupted: what had to be cleaned up is; a deploy's connections are cut now, as a crash would cut them.
  if (code === EXIT.INTERRUPTED || code === EXIT.TERMINATED) process.exit(code);
  process.exitCode = code;
});
