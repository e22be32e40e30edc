// Users and groups of an image, from /etc/passwd, shadow, group and gshadow, and how two
// images' accounts differ. Password hashes are read only to tell whether they changed:
// a change says "password changed", and neither a hash nor anything derived from one
// leaves this module. The day of the last password change (shadow's third field) is
// the day the image was built, so it is not compared.

export const ACCOUNT_FILES = ['etc/passwd', 'etc/shadow', 'etc/group', 'etc/gshadow'] as const;

export type AccountTexts = Partial<Record<(typeof ACCOUNT_FILES)[number], string>>;

/** The account files and the backups shadow-utils and busybox leave ("passwd-"): compared here, never shown as files. */
export function isAccountFile(path: string): boolean {
  const base = path.endsWith('-') ? path.slice(0, -1) : path;
  return (ACCOUNT_FILES as readonly string[]).includes(base);
}

export interface AccountChange {
  kind: 'user' | 'group';
  name: string;
  change: 'added' | 'removed' | 'changed';
  /** What is new or different, for people: "uid 1001", "shell /bin/sh → /bin/ash", "password changed". */
  details: string[];
}

/** What a password field says, without the hash: no password at all, locked, or a password set. */
type PasswordState = 'none' | 'locked' | 'set';

interface Credential {
  state: PasswordState;
  /** The field itself, kept only to compare; never returned. */
  field: string;
}

interface User {
  uid: string;
  gid: string;
  gecos: string;
  home: string;
  shell: string;
  password: Credential;
  /** shadow's min, max, warn, inactive and expire fields. */
  aging: string;
}

interface Group {
  gid: string;
  members: string[];
  password: Credential;
}

function rows(text: string | undefined): string[][] {
  return (text ?? '')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => l.split(':'));
}

function credential(field: string | undefined): Credential {
  const f = field ?? '';
  if (f === '') return { state: 'none', field: f };
  if (f.startsWith('!') || f.startsWith('*') || f === 'x') return { state: 'locked', field: f };
  return { state: 'set', field: f };
}

function users(t: AccountTexts): Map<string, User> {
  const shadow = new Map(rows(t['etc/shadow']).map((r) => [r[0]!, r]));
  const out = new Map<string, User>();
  for (const [name, pw, uid, gid, gecos, home, shell] of rows(t['etc/passwd'])) {
    if (!name) continue;
    const s = shadow.get(name);
    out.set(name, {
      uid: uid ?? '',
      gid: gid ?? '',
      gecos: gecos ?? '',
      home: home ?? '',
      shell: shell ?? '',
      password: credential(pw === 'x' && s ? s[1] : pw),
      aging: s ? s.slice(3, 8).join(':') : '',
    });
  }
  return out;
}

function groups(t: AccountTexts): Map<string, Group> {
  const gshadow = new Map(rows(t['etc/gshadow']).map((r) => [r[0]!, r]));
  const out = new Map<string, Group>();
  for (const [name, pw, gid, members] of rows(t['etc/group'])) {
    if (!name) continue;
    const g = gshadow.get(name);
    out.set(name, {
      gid: gid ?? '',
      members: (members ?? '').split(',').filter(Boolean).sort(),
      password: credential(pw === 'x' && g ? g[1] : pw),
    });
  }
  return out;
}

const PASSWORD_TEXT: Record<PasswordState, string> = { none: 'none (no password needed)', locked: 'locked', set: 'set' };

function passwordChange(a: Credential, b: Credential): string[] {
  if (a.state !== b.state) return [`password: ${PASSWORD_TEXT[a.state]} → ${PASSWORD_TEXT[b.state]}`];
  return a.field !== b.field ? ['password changed'] : [];
}

function field(label: string, a: string, b: string): string[] {
  return a === b ? [] : [`${label} ${a || '(empty)'} → ${b || '(empty)'}`];
}

function listChange(label: string, a: string[], b: string[]): string[] {
  const added = b.filter((x) => !a.includes(x));
  const removed = a.filter((x) => !b.includes(x));
  if (added.length === 0 && removed.length === 0) return [];
  return [`${label}: ${[...added.map((x) => `+${x}`), ...removed.map((x) => `-${x}`)].join(' ')}`];
}

function groupName(gid: string, gs: Map<string, Group>): string {
  const name = [...gs].find(([, g]) => g.gid === gid)?.[0];
  return name ? `${gid} (${name})` : gid;
}

function memberships(user: string, gs: Map<string, Group>): string[] {
  return [...gs].filter(([, g]) => g.members.includes(user)).map(([n]) => n).sort();
}

function describeUser(name: string, u: User, gs: Map<string, Group>): string[] {
  const member = memberships(name, gs);
  return [
    `uid ${u.uid}`,
    `group ${groupName(u.gid, gs)}`,
    ...(u.gecos ? [`name ${JSON.stringify(u.gecos)}`] : []),
    `home ${u.home}`,
    `shell ${u.shell}`,
    `password ${PASSWORD_TEXT[u.password.state]}`,
    ...(member.length ? [`member of ${member.join(', ')}`] : []),
  ];
}

function describeGroup(g: Group): string[] {
  return [`gid ${g.gid}`, g.members.length ? `members ${g.members.join(', ')}` : 'no members'];
}

/** The users and groups added, removed or changed between two images' account files. */
export function compareAccounts(before: AccountTexts, after: AccountTexts): AccountChange[] {
  const [ua, ub, ga, gb] = [users(before), users(after), groups(before), groups(after)];
  const out: AccountChange[] = [];
  for (const name of union(ua, ub)) {
    const a = ua.get(name);
    const b = ub.get(name);
    if (!a) out.push({ kind: 'user', name, change: 'added', details: describeUser(name, b!, gb) });
    else if (!b) out.push({ kind: 'user', name, change: 'removed', details: [] });
    else {
      const details = [
        ...field('uid', a.uid, b.uid),
        ...field('group', groupName(a.gid, ga), groupName(b.gid, gb)),
        ...field('name', JSON.stringify(a.gecos), JSON.stringify(b.gecos)),
        ...field('home', a.home, b.home),
        ...field('shell', a.shell, b.shell),
        ...passwordChange(a.password, b.password),
        ...(a.aging !== b.aging ? ['password aging changed (shadow min, max, warn, inactive, expire)'] : []),
        ...listChange('groups', memberships(name, ga), memberships(name, gb)),
      ];
      if (details.length) out.push({ kind: 'user', name, change: 'changed', details });
    }
  }
  for (const name of union(ga, gb)) {
    const a = ga.get(name);
    const b = gb.get(name);
    if (!a) out.push({ kind: 'group', name, change: 'added', details: describeGroup(b!) });
    else if (!b) out.push({ kind: 'group', name, change: 'removed', details: [] });
    else {
      const details = [...field('gid', a.gid, b.gid), ...listChange('members', a.members, b.members), ...passwordChange(a.password, b.password)];
      if (details.length) out.push({ kind: 'group', name, change: 'changed', details });
    }
  }
  return out;
}

function union<T>(a: Map<string, T>, b: Map<string, T>): string[] {
  return [...new Set([...a.keys(), ...b.keys()])].sort();
}
