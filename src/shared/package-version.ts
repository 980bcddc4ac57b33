// vmlink's version on its own, importing nothing of vmlink: `vmlink --version` answers with it before the command
// tree (commander, the zod schemas) loads.
import { readFileSync } from 'node:fs';

/** vmlink's version, from package.json (one level above src/ and dist/ alike). */
export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
