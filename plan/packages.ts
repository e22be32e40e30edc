// Packages of an image, read from its package database (apk's `installed`, dpkg's
// `status`), and how two images' sets differ. "Listed" packages are the ones the
// commit's `packages` file names; the others came in as dependencies.

export interface Package {
  name: string;
  version: string;
}

export interface PackageEntry extends Package {
  listed: boolean;
}

export interface PackageUpgrade {
  name: string;
  from: string;
  to: string;
  listed: boolean;
  /** The new version sorts before the old one. */
  downgrade?: true;
}

export interface PackageChanges {
  added: PackageEntry[];
  removed: PackageEntry[];
  upgraded: PackageUpgrade[];
}

/** Where each distro keeps the database of installed packages, in the image. */
export const PACKAGE_DB: Record<string, string> = {
  alpine: 'lib/apk/db/installed',
  debian: 'var/lib/dpkg/status',
};

/** Parses apk's `installed` (P: and V: lines) or dpkg's `status` (installed packages only). */
export function parsePackageDb(distro: string, text: string): Package[] {
  const out: Package[] = [];
  for (const block of text.split(/\n\s*\n/)) {
    const field = (re: RegExp) => re.exec(block)?.[1]?.trim();
    if (distro === 'debian') {
      const name = field(/^Package:(.*)$/m);
      const installed = / installed$/.test(field(/^Status:(.*)$/m) ?? '');
      if (name && installed) out.push({ name, version: field(/^Version:(.*)$/m) ?? '' });
    } else {
      const name = field(/^P:(.*)$/m);
      if (name) out.push({ name, version: field(/^V:(.*)$/m) ?? '' });
    }
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The package names a `packages` file lists (a version constraint such as "=1.2" dropped). */
export function listedNames(listed: string[]): Set<string> {
  return new Set(listed.map((l) => /^[A-Za-z0-9][A-Za-z0-9+._-]*/.exec(l)?.[0] ?? l));
}

export function comparePackages(before: Package[], after: Package[], listedBefore: Set<string>, listedAfter: Set<string>): PackageChanges {
  const old = new Map(before.map((p) => [p.name, p.version]));
  const now = new Map(after.map((p) => [p.name, p.version]));
  const changes: PackageChanges = { added: [], removed: [], upgraded: [] };
  for (const p of after) {
    const was = old.get(p.name);
    if (was === undefined) changes.added.push({ ...p, listed: listedAfter.has(p.name) });
    else if (was !== p.version) {
      const downgrade = compareVersions(p.version, was) < 0;
      changes.upgraded.push({ name: p.name, from: was, to: p.version, listed: listedAfter.has(p.name), ...(downgrade ? { downgrade: true as const } : {}) });
    }
  }
  for (const p of before) if (!now.has(p.name)) changes.removed.push({ ...p, listed: listedBefore.has(p.name) });
  return changes;
}

/**
 * Orders versions the way both apk and dpkg mostly agree on: an epoch ("1:") first,
 * then runs of digits compared as numbers and other runs as text ("1.10" > "1.9",
 * "1.2.3-r1" > "1.2.3-r0"). Only the direction of a change is taken from it.
 */
export function compareVersions(a: string, b: string): number {
  const [ea, ra] = epoch(a);
  const [eb, rb] = epoch(b);
  if (ea !== eb) return ea - eb;
  const pa = ra.match(/\d+|\D+/g) ?? [];
  const pb = rb.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

function epoch(v: string): [number, string] {
  const m = /^(\d+):(.*)$/.exec(v);
  return m ? [Number(m[1]), m[2]!] : [0, v];
}
