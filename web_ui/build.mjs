// Bundle the page (TypeScript + uPlot + CSS) into src/h1_training/web/static/ with esbuild: app.js and app.css.
// No CDN at run time: everything the page loads comes from the app. `npm run build`; scripts/setup_env.sh runs it.
import * as esbuild from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.join(here, "..", "src", "h1_training", "web", "static");

await esbuild.build({
  entryPoints: { app: path.join(here, "src", "main.ts") },
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "iife",
  target: ["chrome110", "firefox110", "safari16"],
  outdir,
  logLevel: "warning",
  legalComments: "none",
});
console.log(`built ${path.relative(process.cwd(), outdir)}/app.js and app.css`);
