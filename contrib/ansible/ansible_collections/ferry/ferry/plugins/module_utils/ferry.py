# -*- coding: utf-8 -*-
# Copyright: ferry contributors
# Apache License 2.0 (see the LICENSE file of ferry)
"""Running the ferry binary from the ferry.ferry modules."""

from __future__ import annotations

import json

FERRY_ARGS = dict(ferry_path=dict(type='str', default='ferry'))

_UNITS = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30, 'T': 1 << 40}


def parse_size(value):
    """Bytes of a size as ferry reads it (64M, 1.5G, 4096), or None for 'unlimited'."""
    s = str(value).strip()
    if s.lower() == 'unlimited':
        return None
    if s[-1:] in ('B', 'b'):
        s = s[:-1]
    mult = _UNITS.get(s[-1:].upper(), 1)
    if mult != 1:
        s = s[:-1]
    return int(float(s) * mult)


class Ferry:
    """The ferry binary of the managed host."""

    def __init__(self, module):
        self.module = module
        self.path = module.params['ferry_path']

    def run(self, args, check_rc=True):
        """Run ferry with args; on failure (with check_rc) fail the task with ferry's message."""
        cmd = [self.path] + [str(a) for a in args]
        rc, out, err = self.module.run_command(cmd)
        if check_rc and rc != 0:
            self.module.fail_json(msg='ferry %s failed: %s' % (' '.join(cmd[1:]), (err or out).strip()), rc=rc, stdout=out, stderr=err, cmd=cmd)
        return rc, out, err

    def json(self, args):
        _rc, out, _err = self.run(args)
        try:
            return json.loads(out)
        except ValueError:
            self.module.fail_json(msg='ferry %s printed no JSON' % ' '.join(str(a) for a in args), stdout=out)
        return None

    def containers(self):
        """Every container of this host, as `ferry list -a --json` reports it."""
        return self.json(['list', '-a', '--json'])

    def container(self, ctid):
        """One container's row of `ferry list`, or None when it does not exist (by CTID or name)."""
        for row in self.containers():
            if ctid in (row.get('ctid'), row.get('name')):
                return row
        return None
