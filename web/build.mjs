// Builds the web app: esbuild bundles src/main.js (and the CSS it imports)
// into content-hashed files under assets/, then writes index.html naming them.
// Usage: node build.mjs [--outdir DIR]   (default: web/dist)
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = process.argv.indexOf('--outdir');
const outdir = path.resolve(arg > 0 ? process.argv[arg + 1] : path.join(here, 'dist'));

fs.rmSync(outdir, { recursive: true, force: true });
const result = await esbuild.build({
  entryPoints: [path.join(here, 'src', 'main.js')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  outdir,
  entryNames: 'assets/[name]-[hash]',
  assetNames: 'assets/[name]-[hash]',
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => path.relative(outdir, path.resolve(p)));
const js = outputs.find((p) => p.endsWith('.js'));
const css = outputs.find((p) => p.endsWith('.css'));
const html = fs.readFileSync(path.join(here, 'src', 'index.html'), 'utf8')
  .replace('%CSS%', css)
  .replace('%JS%', js);
fs.writeFileSync(path.join(outdir, 'index.html'), html);
console.log(`web: built ${outputs.join(', ')} and index.html into ${outdir}`);
