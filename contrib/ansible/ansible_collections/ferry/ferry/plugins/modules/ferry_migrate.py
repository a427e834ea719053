#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ferry contributors
# Apache License 2.0 (see the LICENSE file of ferry)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: ferry_migrate
short_description: Move a ferry container to another host
description:
  - Runs C(ferry migrate) on the managed host (the source) to move a container to I(dest) over ssh, live when it
    runs (its processes keep running, their TCP connections stay open), offline when stopped.
  - When the container is not on the managed host but on I(dest) already, nothing is done and the result is C(ok).
  - In check mode, runs the migration's preflight on I(dest) (C(ferry migrate --dry-run)) and changes nothing.
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
  dest:
    description: The destination, C([USER@]HOST), reached with the system's ssh client.
    type: str
    required: true
  mode:
    description: C(auto) migrates live when the container runs and offline when it is stopped.
    type: str
    choices: [auto, online, offline]
    default: auto
  ssh_opts:
    description: Options for ssh, split on spaces (ferry's C(--ssh-opts)).
    type: str
    default: ''
  remote_ferry:
    description: The ferry command on the destination (ferry's C(--remote-ferry)).
    type: str
    default: ferry
  keep_dst:
    description: On failure keep the files synced to the destination, for a faster retry.
    type: bool
    default: false
  compress:
    description: zstd level of the image on the wire (0 for none).
    type: int
    default: 1
  data_channel:
    description: How the checkpoint image travels (C(tcp) is not encrypted; for a trusted network only).
    type: str
    choices: [ssh, tcp]
    default: ssh
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: none
'''

EXAMPLES = r'''
- name: Move container 101 to host b, live
  ferry.ferry.ferry_migrate:
    name: "101"
    dest: root@host-b
'''

RETURN = r'''
report:
  description: The migration's report (C(ferry migrate --json)) with its stage timings and C(frozen_ms).
  returned: when the container moved
  type: dict
'''

import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferry.ferry.plugins.module_utils.ferry import FERRY_ARGS, Ferry


def on_destination(module, p):
    """Whether the destination has the container (asked over ssh with its ferry)."""
    remote = '%s status %s --json' % (p['remote_ferry'], shlex.quote(p['name']))
    cmd = ['ssh'] + shlex.split(p['ssh_opts']) + ['-o', 'BatchMode=yes', p['dest'], remote]
    rc, _out, _err = module.run_command(cmd)
    return rc == 0


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            dest=dict(type='str', required=True),
            mode=dict(type='str', default='auto', choices=['auto', 'online', 'offline']),
            ssh_opts=dict(type='str', default=''),
            remote_ferry=dict(type='str', default='ferry'),
            keep_dst=dict(type='bool', default=False),
            compress=dict(type='int', default=1),
            data_channel=dict(type='str', default='ssh', choices=['ssh', 'tcp']),
            **FERRY_ARGS
        ),
        supports_check_mode=True,
    )
    p = module.params
    ferry = Ferry(module)
    if ferry.container(p['name']) is None:
        if on_destination(module, p):
            module.exit_json(changed=False, msg='container %s is on %s already' % (p['name'], p['dest']))
        module.fail_json(msg='container %s is neither on this host nor on %s' % (p['name'], p['dest']))

    args = ['migrate', p['name'], p['dest'], '--ssh-opts', p['ssh_opts'], '--remote-ferry', p['remote_ferry'],
            '--compress', str(p['compress']), '--data-channel', p['data_channel'], '--json']
    if p['mode'] != 'auto':
        args.append('--' + p['mode'])
    if p['keep_dst']:
        args.append('--keep-dst')
    if module.check_mode:
        ferry.run(args[:-1] + ['--dry-run'])
        module.exit_json(changed=True, msg='the preflight on %s passed' % p['dest'])
    report = ferry.json(args)
    module.exit_json(changed=True, report=report)


if __name__ == '__main__':
    main()
