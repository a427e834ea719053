#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ferry contributors
# Apache License 2.0 (see the LICENSE file of ferry)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: ferry_container
short_description: Manage a ferry container
description:
  - Makes a ferry container present, started, stopped, checkpointed (suspended to its dump) or absent,
    with its addresses, limits and boot setting, by running C(ferry) on the managed host.
  - Reports C(changed) only when something changed. Supports check mode and diff.
version_added: "0.1.0"
author:
  - ferry contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferry.ferry.ferry
  - ansible.builtin.action_common_attributes
options:
  name:
    description: The container's CTID (or its name, once it exists).
    type: str
    required: true
  state:
    description:
      - C(present) creates it (stopped when new), C(started) also starts it (or resumes it from its suspend image),
        C(stopped) stops it, C(checkpointed) suspends it (C(ferry suspend)), C(absent) destroys it.
    type: str
    choices: [present, started, stopped, checkpointed, absent]
    default: started
  template:
    description: The template directory or tarball to create it from (needed when it does not exist).
    type: str
  addresses:
    description: Its venet addresses; those not listed are removed. Leave unset to leave them alone.
    type: list
    elements: str
  limits:
    description:
      - Limits by ferry's names (C(ram), C(swap), C(diskspace) as sizes like C(256M); C(numproc), C(numfiles),
        C(cpuunits), C(cpulimit) as numbers), or C(unlimited). Limits not named are left alone.
    type: dict
  onboot:
    description: Whether it starts at boot. Leave unset to leave it alone.
    type: bool
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
'''

EXAMPLES = r'''
- name: A web container, running, with one address and 512M of memory
  ferry.ferry.ferry_container:
    name: "101"
    template: /var/lib/ferry/templates/debian-12
    addresses: [198.18.1.10]
    limits:
      ram: 512M
      numproc: 200
    onboot: true

- name: Suspend it to its dump before maintenance
  ferry.ferry.ferry_container:
    name: "101"
    state: checkpointed
'''

RETURN = r'''
container:
  description: The container as C(ferry list -a --json) reports it afterwards (absent when destroyed).
  returned: success
  type: dict
commands:
  description: The ferry commands run (or, in check mode, that would run).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferry.ferry.plugins.module_utils.ferry import FERRY_ARGS, Ferry, parse_size

# Limit name -> (field of `ferry list --json`, whether it is a size).
LIMITS = {
    'ram': ('ram', True),
    'swap': ('swaplimit', True),
    'diskspace': ('disklimit', True),
    'numproc': ('numproclimit', False),
    'numfiles': ('numfileslimit', False),
    'cpuunits': ('cpuunits', False),
    'cpulimit': ('cpulimit', False),
}


def wanted_value(name, value):
    if str(value).strip().lower() == 'unlimited':
        return None
    return parse_size(value) if LIMITS[name][1] else int(value)


def view(row):
    """What the module compares and shows in a diff."""
    if row is None:
        return {'state': 'absent'}
    state = row['status']
    if state != 'running' and row.get('suspended'):
        state = 'checkpointed'
    out = {'state': state, 'addresses': sorted(row.get('ip') or []), 'onboot': row.get('onboot')}
    out['limits'] = dict((k, row.get(f)) for k, (f, _s) in LIMITS.items())
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            state=dict(type='str', default='started', choices=['present', 'started', 'stopped', 'checkpointed', 'absent']),
            template=dict(type='str'),
            addresses=dict(type='list', elements='str'),
            limits=dict(type='dict'),
            onboot=dict(type='bool'),
            **FERRY_ARGS
        ),
        supports_check_mode=True,
    )
    p = module.params
    ferry = Ferry(module)
    name, state = p['name'], p['state']
    for k in p['limits'] or {}:
        if k not in LIMITS:
            module.fail_json(msg='container %s: unknown limit %r; known: %s' % (name, k, ', '.join(sorted(LIMITS))))

    row = ferry.container(name)
    before = view(row)
    plan = []  # ferry argument lists, in order

    if state == 'absent':
        if row is not None:
            plan.append(['destroy', name, '--force'])
    else:
        settings = []
        current_ips = set(before.get('addresses') or [])
        if p['addresses'] is not None:
            want = set(p['addresses'])
            for ip in sorted(want - current_ips):
                settings += ['--ipadd', ip]
            for ip in sorted(current_ips - want):
                settings += ['--ipdel', ip]
        for k, v in sorted((p['limits'] or {}).items()):
            have = before.get('limits', {}).get(k)
            if row is None or have != wanted_value(k, v):
                settings += ['--' + k, str(v)]
        if p['onboot'] is not None and (row is None or before.get('onboot') != p['onboot']):
            settings += ['--onboot', 'yes' if p['onboot'] else 'no']
        if row is None:
            if not p['template']:
                module.fail_json(msg='container %s does not exist: give template to create it' % name)
            plan.append(['create', name, '--template', p['template']] + settings)
        elif settings:
            plan.append(['set', name] + settings + ['--save'])
        current = 'stopped' if row is None else before['state']
        if state == 'started' and current != 'running':
            plan.append(['resume', name, '--quiet'] if current == 'checkpointed' else ['start', name])
        elif state == 'stopped' and current == 'running':
            plan.append(['stop', name])
        elif state == 'checkpointed' and current != 'checkpointed':
            if current != 'running':
                module.fail_json(msg='container %s: state checkpointed needs it running (it is %s); start it first' % (name, current))
            plan.append(['suspend', name, '--quiet'])

    commands = ['ferry ' + ' '.join(c) for c in plan]
    result = dict(changed=bool(plan), commands=commands)
    if module.check_mode:
        after = dict(before)
        after['state'] = {'present': before['state'] if row else 'stopped', 'started': 'running'}.get(state, state)
        if module._diff:
            result['diff'] = dict(before=before, after=after)
        module.exit_json(**result)

    for c in plan:
        ferry.run(c)
    row = ferry.container(name) if state != 'absent' else None
    if row is not None:
        result['container'] = row
    if module._diff:
        result['diff'] = dict(before=before, after=view(row))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
