#!/usr/bin/python3
"""config/nova-api-policy.yaml against nova's own policy code (Debian's nova 26, Zed).

Every rule the snippet names must be one of nova's registered rules (a misspelt name would be
ignored by nova-api and leave the action open), and each must deny an admin and a project member
alike, as oslo.policy evaluates it. The actions kiln serves must stay open to their default
callers.

  check_nova_policy.py SNIPPET
"""
import sys

import yaml
from oslo_config import cfg
from oslo_policy import policy

from nova import policies

SERVED = ["os_compute_api:servers:create", "os_compute_api:servers:delete",
          "os_compute_api:servers:reboot", "os_compute_api:servers:start",
          "os_compute_api:servers:stop", "os_compute_api:os-console-output",
          "os_compute_api:servers:create_image"]


def main(path):
    with open(path) as f:
        snippet = yaml.safe_load(f)
    registered = {rule.name for rule in policies.list_rules()}
    unknown = sorted(set(snippet) - registered)
    if unknown:
        sys.exit(f"not nova rules (nova-api would ignore them): {', '.join(unknown)}")

    conf = cfg.ConfigOpts()
    conf([], project="kiln-policy-check")
    enforcer = policy.Enforcer(conf, use_conf=False)
    enforcer.register_defaults(policies.list_rules())
    # nova's defaults, with the snippet over them, as nova-api holds them after reading it.
    rules = {rule.name: rule.check_str for rule in policies.list_rules()}
    rules.update(snippet)
    enforcer.set_rules(policy.Rules.from_dict(rules), overwrite=True, use_conf=False)
    project = "0a0b6e4ad0da400cbd11a25ddf1a8795"
    callers = {
        "admin": {"roles": ["admin", "member", "reader"], "project_id": project,
                  "user_id": "u1", "is_admin": True},
        "member": {"roles": ["member", "reader"], "project_id": project, "user_id": "u2"},
    }
    target = {"project_id": project, "user_id": "u2"}
    for name in sorted(snippet):
        for who, creds in callers.items():
            if enforcer.enforce(name, target, creds):
                sys.exit(f"{name} still allows the {who}")
    for name in SERVED:
        if name in snippet or not enforcer.enforce(name, target, callers["member"]):
            sys.exit(f"{name}, which kiln serves, is refused to a project member")
    print(f"nova-api policy: {len(snippet)} rules, all nova's, all denying; "
          f"{len(SERVED)} served actions still open")


if __name__ == "__main__":
    main(sys.argv[1])
