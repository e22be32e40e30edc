import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DistroBackend, InstalledPackage, StageRequest } from './distro/backend.js';
import { pidTag, removeBuildDir } from './sweep.js';
import type { Work } from './work.js';

// The package stage: the root file system with only the packages installed. It is the
// slow part of a build, so it is cached, keyed by everything it depends on; a commit
// that changes only root/ or setup.sh reuses it untouched (it is overlayfs's lowerdir).

const STAGE_FORMAT = 1;

export interface Stage {
  key: string;
  root: string;
  packages: InstalledPackage[];
  reused: boolean;
}

export async function stageKey(backend: DistroBackend, req: StageRequest): Promise<string> {
  const inputs = { format: STAGE_FORMAT, distro: backend.name, packages: [...new Set(req.packages)].sort(), ...(await backend.keyInputs(req)) };
  return createHash('sha256').update(JSON.stringify(inputs)).digest('hex');
}

export async function packageStage(backend: DistroBackend, req: StageRequest, cacheRoot: string, work: Work): Promise<Stage> {
  const key = await stageKey(backend, req);
  const dir = join(cacheRoot, 'stages', key);
  if (existsSync(join(dir, 'packages.json'))) {
    return { key, root: join(dir, 'root'), packages: JSON.parse(readFileSync(join(dir, 'packages.json'), 'utf8')), reused: true };
  }
  const tmp = join(cacheRoot, 'stages', `.tmp-${key}-${pidTag()}`);
  mkdirSync(join(tmp, 'root'), { recursive: true });
  try {
    await backend.create(req, join(tmp, 'root'), work);
    const packages = await backend.installed(join(tmp, 'root'));
    writeFileSync(join(tmp, 'packages.json'), JSON.stringify(packages));
    renameSync(tmp, dir);
    return { key, root: join(dir, 'root'), packages, reused: false };
  } catch (err) {
    await removeBuildDir(tmp, work);
    throw err;
  }
}
