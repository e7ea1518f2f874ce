// Bundles the extension (src/extension.ts -> out/extension.js) with esbuild; with --tests, also each
// test/unit/*.test.ts -> out-test/*.test.js for `node --test`. Type checking is `npm run typecheck`.
import { build } from 'esbuild';
import { readdirSync } from 'fs';
import { dirname, join } from 'path';
import { fileURLToPath } from 'url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const common = { bundle: true, platform: 'node', target: 'node18', format: 'cjs', sourcemap: true, logLevel: 'warning' };

await build({ ...common, entryPoints: [join(root, 'src/extension.ts')], outfile: join(root, 'out/extension.js'), external: ['vscode'], minify: true });
if (process.argv.includes('--tests')) {
  const tests = readdirSync(join(root, 'test/unit')).filter((f) => f.endsWith('.test.ts')).map((f) => join(root, 'test/unit', f));
  await build({ ...common, entryPoints: tests, outdir: join(root, 'out-test'), external: ['vscode'] });
}
