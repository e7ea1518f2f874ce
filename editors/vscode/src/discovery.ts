// Where the `chatd` executable is: the `chatd.path` setting, else PATH, else the usual per-user install
// places. Returns every place looked at, so the "not found" message can say so. No VS Code imports.

import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export interface Found { command?: string; tried: string[] }

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? path.join(os.homedir(), p.slice(1)) : p;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export function findChatd(configured: string, env: NodeJS.ProcessEnv = process.env): Found {
  const tried: string[] = [];
  if (configured.trim()) {
    const p = expandHome(configured.trim());
    tried.push(p);
    // A configured path is used as given (a wrong one should fail loudly, not fall back silently).
    return { command: isExecutable(p) ? p : undefined, tried };
  }
  const dirs = (env.PATH ?? '').split(path.delimiter).filter(Boolean);
  const home = os.homedir();
  dirs.push(path.join(home, '.local', 'bin'), path.join(home, '.local', 'pipx', 'venvs', 'chatd', 'bin'));
  for (const dir of dirs) {
    const p = path.join(dir, 'chatd');
    tried.push(p);
    if (isExecutable(p)) return { command: p, tried };
  }
  return { tried };
}
