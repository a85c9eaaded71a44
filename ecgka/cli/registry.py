"""``ecgka registry list|show|register|promote``: the model registry folder and its promotion gate.

    ecgka registry list REGISTRY
    ecgka registry show REGISTRY@champion | REGISTRY@v3
    ecgka registry register REGISTRY RUN_DIR [--checkpoint best] [--note TEXT]
    ecgka registry promote REGISTRY@v3 [--gate configs/gate/default.yaml] [--data DIR] [--new-registry]
    ecgka registry promote REGISTRY --run RUN_DIR [...]
    ecgka registry alias REGISTRY set|unset challenger [VERSION] --reason TEXT
    ecgka registry rollback REGISTRY VERSION --reason TEXT
    ecgka registry archive REGISTRY VERSION --reason TEXT
    ecgka registry mlflow REGISTRY --tracking-uri URI [--model-name NAME] [--experiment NAME]
"""

from __future__ import annotations

import json

from ecgka.cli.options import (
    Command,
    PromoteOptions,
    RegisterOptions,
    RegistryAliasOptions,
    RegistryArchiveOptions,
    RegistryListOptions,
    RegistryMlflowOptions,
    RegistryRollbackOptions,
    RegistryShowOptions,
)


def _list(o: RegistryListOptions) -> int:
    from ecgka.errors import InputError
    from ecgka.release.registry import ModelRegistry

    reg = ModelRegistry(o.registry)
    if not reg.dir.is_registry():
        raise InputError(f"{o.registry}: not a model registry (create one with `ecgka registry register`)")
    reg.check()
    by_version: dict[str, list[str]] = {}
    for alias, version in reg.aliases().items():
        by_version.setdefault(version, []).append(alias)
    for version in reg.archived():
        by_version.setdefault(version, []).append("archived")
    for name in reg.versions():
        rec = reg.record(name)
        few = (rec["metrics"].get("regression", {}).get("few") or {}).get("mae")
        print(f"{name}  {','.join(by_version.get(name, [])) or '-':<20} {rec['created']}  dataset "
              f"{rec['dataset']['digest']}  few MAE {'-' if few is None else f'{few:.3f}'}  {rec['run']['path']}")
    return 0


def _show(o: RegistryShowOptions) -> int:
    from ecgka.errors import InputError
    from ecgka.release.registry import ModelRegistry, parse_ref

    parsed = parse_ref(o.ref)
    if parsed is None:
        raise InputError(f"{o.ref}: give a version reference REGISTRY@champion or REGISTRY@v3")
    reg = ModelRegistry(parsed[0])
    reg.check()
    print(json.dumps(reg.record(reg.resolve(parsed[1])), indent=2))
    return 0


def _register(o: RegisterOptions) -> int:
    name, created = o.execute_reporting()
    print(f"registered {o.run} as {o.registry}@{name}" if created
          else f"{o.run}: already registered as {o.registry}@{name}")
    return 0


def _event(entry: dict) -> str:
    return (f"{entry['event']}: {entry.get('alias') or 'version'} {entry.get('previous') or '-'} -> "
            f"{entry.get('version') or '-'} ({entry.get('reason')})")


def _alias(o: RegistryAliasOptions) -> int:
    print(_event(o.execute()))
    return 0


def _rollback(o: RegistryRollbackOptions) -> int:
    print(_event(o.execute()))
    return 0


def _archive(o: RegistryArchiveOptions) -> int:
    entry = o.execute()
    print(f"archived {o.registry}@{entry['version']} ({entry['reason']}): kept, never served")
    return 0


def _mlflow(o: RegistryMlflowOptions) -> int:
    settings = o.execute()
    print(f"{o.registry}: promotions and rollbacks now set the champion alias of {settings['model_name']!r} in "
          f"the MLflow registry at {settings['tracking_uri']}")
    return 0


def _promote(o: PromoteOptions) -> int:
    """Exit 0: promoted (or already the champion); 3: refused by the gate (``GATE_REFUSED_EXIT``); 2: bad
    input; 75: the registry is locked by another writer."""
    from ecgka.release.promote import GATE_REFUSED_EXIT

    decision = o.execute()
    print(format_decision(decision))
    refused = not decision["promote"] and decision["champion"] != decision["challenger"]
    return GATE_REFUSED_EXIT if refused else 0


def format_decision(decision: dict) -> str:
    """The gate's decision as console lines."""
    if decision.get("reason"):
        head = f"{decision['challenger']}: {decision['reason']}"
        return head + (" -> champion" if decision["promote"] else "")
    lines = [f"{decision['challenger']} vs champion {decision['champion']}: "
             f"{'promoted to champion' if decision['promote'] else 'refused, the champion stays'}"]
    for rule in decision["rules"]:
        status = "pass" if rule["passed"] else "FAIL"
        cases = f" on {rule['n']} case(s)" if rule.get("n") is not None else ""
        lines.append(f"  {status} {rule['metric']}: champion {rule['champion']}, challenger {rule['challenger']}"
                     + cases + ("" if rule["passed"] else f" ({'; '.join(rule['reasons'])})"))
    return "\n".join(lines)


LIST = Command(RegistryListOptions, _list)
SHOW = Command(RegistryShowOptions, _show)
REGISTER = Command(RegisterOptions, _register)
PROMOTE = Command(PromoteOptions, _promote)
ALIAS = Command(RegistryAliasOptions, _alias)
ROLLBACK = Command(RegistryRollbackOptions, _rollback)
ARCHIVE = Command(RegistryArchiveOptions, _archive)
MLFLOW = Command(RegistryMlflowOptions, _mlflow)
