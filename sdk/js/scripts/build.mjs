// npm run build: ESM + declarations in dist/ (tsc), the single-file bundles, and the copy of
// the bundle the gateway serves to its terminal page.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bundle, root, servedCopy } from './bundle.mjs';

rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', root], { stdio: 'inherit' });
mkdirSync(join(root, 'dist'), { recursive: true });
const plain = await bundle();
writeFileSync(join(root, 'dist/waygate-client.js'), plain);
writeFileSync(join(root, 'dist/waygate-client.min.js'), await bundle({ minify: true }));
writeFileSync(servedCopy, plain);
console.log(`built dist/ and ${servedCopy}`);
