// A real `chatd serve` on a private CHATD_HOME for the unit tests, started and stopped by the test.
import * as cp from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export const CHATD = process.env.CHATD_BIN
  ?? path.resolve(__dirname, '..', '..', '..', '.venv', 'bin', 'chatd'); // __dirname is editors/vscode/out-test

export interface Daemon { home: string; socket: string; env: NodeJS.ProcessEnv; stop(): Promise<void> }

export async function startDaemon(): Promise<Daemon> {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'chatd-vscode-unit-'));
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env)
    .filter(([k]) => !k.startsWith('CHATD_') && !k.endsWith('_API_KEY') && !k.endsWith('_BASE_URL')));
  env.CHATD_HOME = home;
  const proc = cp.spawn(CHATD, ['serve', '--ready-fd', '3'], { env, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => { stderr += d; });
  await new Promise<void>((resolve, reject) => {
    const ready = proc.stdio[3] as NodeJS.ReadableStream;
    ready.once('data', (d) => (String(d).startsWith('ready') ? resolve() : reject(new Error(String(d)))));
    proc.once('exit', (code) => reject(new Error(`chatd serve exited (${code}): ${stderr}`)));
  });
  return {
    home, env, socket: path.join(home, 'run', 'chatd.sock'),
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      fs.rmSync(home, { recursive: true, force: true });
    },
  };
}
