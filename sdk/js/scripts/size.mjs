// npm run size: minified + gzipped sizes; fails when `Waygate` alone reaches 10 KB.
import { gzipSync } from 'node:zlib';
import { bundle } from './bundle.mjs';

const LIMIT = 10 * 1024;
const rows = [
  ['Waygate alone', "export { Waygate } from './src/index.ts';"],
  ['DeviceClient alone', "export { DeviceClient } from './src/index.ts';"],
  ['TerminalClient alone', "export { TerminalClient } from './src/index.ts';"],
  ['everything', "export * from './src/index.ts';"],
];
let failed = false;
for (const [name, stdin] of rows) {
  const min = await bundle({ stdin, minify: true });
  const gz = gzipSync(min, { level: 9 }).length;
  const line = `${name.padEnd(22)} ${String(min.length).padStart(6)} B minified, ${String(gz).padStart(5)} B gzipped`;
  if (name === 'Waygate alone' && gz >= LIMIT) {
    failed = true;
    console.log(`${line}  OVER the ${LIMIT} B budget`);
  } else {
    console.log(name === 'Waygate alone' ? `${line}  (budget ${LIMIT} B)` : line);
  }
}
process.exit(failed ? 1 : 0);
