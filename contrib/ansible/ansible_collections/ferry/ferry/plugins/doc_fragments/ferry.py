# -*- coding: utf-8 -*-
# Copyright: ferry contributors
# Apache License 2.0 (see the LICENSE file of ferry)

from __future__ import annotations


class ModuleDocFragment(object):
    """The options every ferry.ferry module takes."""

    DOCUMENTATION = r'''
options:
  ferry_path:
    description:
      - The ferry binary on the managed host. ferry's host settings come from C(/etc/ferry/ferry.toml)
        or the C(FERRY_*) variables (set them with the task's C(environment)).
    type: str
    default: ferry
'''
