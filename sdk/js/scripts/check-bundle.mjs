// Fails when the bundle committed for the gateway's terminal page is not what the sources build.
import { readFileSync } from 'node:fs';
import { bundle, servedCopy } from './bundle.mjs';

const fresh = await bundle();
let committed = '';
try {
  committed = readFileSync(servedCopy, 'utf8');
} catch {
  // missing: reported below
}
if (committed !== fresh) {
  console.error(`${servedCopy} is stale: run \`npm run build\` in sdk/js and commit it`);
  process.exit(1);
}
console.log(`${servedCopy} matches the sources (${fresh.length} bytes)`);
