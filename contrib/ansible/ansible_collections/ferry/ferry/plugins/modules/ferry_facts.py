#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ferry contributors
# Apache License 2.0 (see the LICENSE file of ferry)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: ferry_facts
short_description: What ferry says about the managed host and its containers
description:
  - Sets the facts C(ferry_check) (C(ferry check --json), what this host supports) and C(ferry_containers)
    (C(ferry list -a --json), every container with its state, usage and limits).
version_added: "0.1.0"
author:
  - ferry contributors (!UNKNOWN)
extends_documentation_fragment:
  - ferry.ferry.ferry
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
options: {}
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
'''

EXAMPLES = r'''
- name: Gather ferry's facts
  ferry.ferry.ferry_facts:

- name: The running containers
  ansible.builtin.debug:
    msg: "{{ ferry_containers | selectattr('status', 'equalto', 'running') | map(attribute='ctid') | list }}"
'''

RETURN = r'''
ansible_facts:
  description: The facts set.
  returned: always
  type: dict
  contains:
    ferry_check:
      description: C(ferry check --json).
      type: dict
      returned: always
    ferry_containers:
      description: C(ferry list -a --json).
      type: list
      elements: dict
      returned: always
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.ferry.ferry.plugins.module_utils.ferry import FERRY_ARGS, Ferry


def main():
    module = AnsibleModule(argument_spec=dict(**FERRY_ARGS), supports_check_mode=True)
    ferry = Ferry(module)
    facts = dict(ferry_check=ferry.json(['check', '--json']), ferry_containers=ferry.containers())
    module.exit_json(changed=False, ansible_facts=facts)


if __name__ == '__main__':
    main()
