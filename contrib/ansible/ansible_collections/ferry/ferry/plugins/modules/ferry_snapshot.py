#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ferry contributors
# Apache License 2.0 (see the LICENSE file of ferry)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: ferry_snapshot
short_description: Snapshots of a ferry container, their export and schedule
description:
  - Creates or deletes a named snapshot of a container (C(ferry snapshot create --name)), exports it to an image
    file (C(ferry snapshot export)) when that file does not exist yet, and sets or removes the container's snapshot
    schedule (C(ferry snapshot schedule)).
  - Reports C(changed) only when something changed. Supports check mode.
version_added: "0.1.0"
author:
  - ferry contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferry.ferry.ferry
  - ansible.builtin.action_common_attributes
options:
  name:
    description: The container's CTID or name.
    type: str
    required: true
  snapshot:
    description: The snapshot's name (for I(state) and I(export_to)).
    type: str
  state:
    description: Whether the snapshot named I(snapshot) exists.
    type: str
    choices: [present, absent]
    default: present
  stateless:
    description: Snapshot the files only, not the running processes.
    type: bool
    default: false
  export_to:
    description: Write the snapshot named I(snapshot) to this image file, unless it exists.
    type: path
  schedule:
    description: The container's snapshot schedule; C(enabled=false) removes it.
    type: dict
    suboptions:
      every:
        description: Time between snapshots (30m, 1h, 1d, 1h30m).
        type: str
      keep:
        description: Newest scheduled snapshots to keep.
        type: int
      keep_daily:
        description: Also keep the newest snapshot of each of this many recent days.
        type: int
        default: 0
      enabled:
        description: Whether there is a schedule.
        type: bool
        default: true
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: none
'''

EXAMPLES = r'''
- name: A snapshot before the upgrade, exported
  ferry.ferry.ferry_snapshot:
    name: "101"
    snapshot: before-upgrade
    export_to: /srv/backup/101-before-upgrade.img

- name: Hourly snapshots, a day of them kept
  ferry.ferry.ferry_snapshot:
    name: "101"
    schedule:
      every: 1h
      keep: 24
'''

RETURN = r'''
snapshots:
  description: The container's snapshots afterwards (C(ferry snapshot list --json)).
  returned: success
  type: list
  elements: dict
'''

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferry.ferry.plugins.module_utils.ferry import FERRY_ARGS, Ferry

_SECS = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400}


def seconds(every):
    """Seconds of a duration as ferry reads it (30m, 1h30m, 1d)."""
    parts = re.findall(r'(\d+)([smhd])', every)
    if not parts or ''.join(n + u for n, u in parts) != every.replace(' ', ''):
        return None
    return sum(int(n) * _SECS[u] for n, u in parts)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            snapshot=dict(type='str'),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            stateless=dict(type='bool', default=False),
            export_to=dict(type='path'),
            schedule=dict(type='dict', options=dict(
                every=dict(type='str'),
                keep=dict(type='int'),
                keep_daily=dict(type='int', default=0),
                enabled=dict(type='bool', default=True),
            )),
            **FERRY_ARGS
        ),
        required_by=dict(export_to='snapshot'),
        supports_check_mode=True,
    )
    p = module.params
    ferry = Ferry(module)
    ct = p['name']
    listing = ferry.json(['snapshot', 'list', ct, '--json'])
    named = [s for s in listing['snapshots'] if p['snapshot'] and s.get('name') == p['snapshot']]
    plan = []
    if p['snapshot']:
        if p['state'] == 'present' and not named:
            plan.append(['snapshot', 'create', ct, '--name', p['snapshot']] + (['--stateless'] if p['stateless'] else []))
        elif p['state'] == 'absent':
            plan += [['snapshot', 'delete', ct, s['id']] for s in named]
    if p['export_to'] and p['state'] == 'present' and not os.path.exists(p['export_to']):
        plan.append(('export', p['export_to']))
    sched = p['schedule']
    if sched is not None:
        have = listing.get('schedule')
        if not sched['enabled']:
            if have:
                plan.append(['snapshot', 'schedule', ct, '--off'])
        else:
            if not sched['every'] or sched['keep'] is None:
                module.fail_json(msg='container %s: a schedule needs every and keep' % ct)
            secs = seconds(sched['every'])
            want = {'every_secs': secs, 'keep': sched['keep'], 'keep_daily': sched['keep_daily']}
            if have != want:
                plan.append(['snapshot', 'schedule', ct, '--every', sched['every'], '--keep', str(sched['keep']),
                             '--keep-daily', str(sched['keep_daily'])])
    if module.check_mode or not plan:
        module.exit_json(changed=bool(plan), snapshots=listing['snapshots'])
    for step in plan:
        if step[0] == 'export':
            current = ferry.json(['snapshot', 'list', ct, '--json'])['snapshots']
            ids = [s['id'] for s in current if s.get('name') == p['snapshot']]
            if not ids:
                module.fail_json(msg='container %s has no snapshot named %s to export' % (ct, p['snapshot']))
            ferry.run(['snapshot', 'export', ct, ids[-1], step[1]])
        else:
            ferry.run(step)
    module.exit_json(changed=True, snapshots=ferry.json(['snapshot', 'list', ct, '--json'])['snapshots'])


if __name__ == '__main__':
    main()
