"""``ecgka registry list|show|register|promote``: the model registry folder and its promotion gate.

    ecgka registry list REGISTRY
    ecgka registry show REGISTRY@champion | REGISTRY@v3
    ecgka registry register REGISTRY RUN_DIR [--checkpoint best] [--note TEXT]
    ecgka registry promote REGISTRY@v3 [--gate configs/gate/default.yaml] [--data DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import json

HELP = "list, show, register and promote model versions (champion/challenger aliases, the gate, the log)"
ACTIONS = ("list", "show", "register", "promote")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("target", metavar="REGISTRY[@alias|@vN]",
                        help="the registry folder (list, register) or a version reference (show, promote)")
    parser.add_argument("extra", nargs="*", metavar="RUN_DIR | key=value",
                        help="register: the run folder; promote: gate overrides (e.g. n_boot=2000)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"])
    parser.add_argument("--note", help="register: a note kept in model.json")
    parser.add_argument("--gate", metavar="FILE", help="promote: gate rules (default configs/gate/default.yaml)")
    parser.add_argument("--data", metavar="DIR", help="promote: compare on this dataset's test split "
                                                      "(default: the candidate's own dataset)")


def _list(args) -> int:
    from ecgka.errors import InputError
    from ecgka.release.registry import ModelRegistry

    reg = ModelRegistry(args.target)
    if not reg.dir.is_registry():
        raise InputError(f"{args.target}: not a model registry (create one with `ecgka registry register`)")
    by_version: dict[str, list[str]] = {}
    for alias, version in reg.aliases().items():
        by_version.setdefault(version, []).append(alias)
    for name in reg.versions():
        rec = reg.record(name)
        few = (rec["metrics"].get("regression", {}).get("few") or {}).get("mae")
        print(f"{name}  {','.join(by_version.get(name, [])) or '-':<20} {rec['created']}  dataset "
              f"{rec['dataset']['digest']}  few MAE {'-' if few is None else f'{few:.3f}'}  {rec['run']['path']}")
    return 0


def _show(args) -> int:
    from ecgka.errors import InputError
    from ecgka.release.registry import ModelRegistry, parse_ref

    parsed = parse_ref(args.target)
    if parsed is None:
        raise InputError(f"{args.target}: give a version reference REGISTRY@champion or REGISTRY@v3")
    reg = ModelRegistry(parsed[0])
    print(json.dumps(reg.record(reg.resolve(parsed[1])), indent=2))
    return 0


def _register(args) -> int:
    from ecgka.errors import InputError
    from ecgka.release.registry import ModelRegistry

    if len(args.extra) != 1:
        raise InputError("registry register: give REGISTRY RUN_DIR")
    name = ModelRegistry(args.target).register(args.extra[0], args.checkpoint, args.note)
    print(f"registered {args.extra[0]} as {args.target}@{name}")
    return 0


def _promote(args) -> int:
    from ecgka.errors import InputError
    from ecgka.release.gate import load_gate
    from ecgka.release.promote import promote
    from ecgka.release.registry import parse_ref

    parsed = parse_ref(args.target)
    if parsed is None:
        raise InputError(f"{args.target}: give a version reference REGISTRY@v3 (or REGISTRY@challenger)")
    decision = promote(parsed[0], parsed[1], load_gate(args.gate, args.extra), args.data)
    print(format_decision(decision))
    return 0


def format_decision(decision: dict) -> str:
    """The gate's decision as console lines."""
    if decision.get("reason"):
        head = f"{decision['challenger']}: {decision['reason']}"
        return head + (" -> champion" if decision["promote"] else "")
    lines = [f"{decision['challenger']} vs champion {decision['champion']}: "
             f"{'promoted to champion' if decision['promote'] else 'refused, the champion stays'}"]
    for rule in decision["rules"]:
        status = "pass" if rule["passed"] else "FAIL"
        lines.append(f"  {status} {rule['metric']}: champion {rule['champion']}, challenger {rule['challenger']}"
                     + ("" if rule["passed"] else f" ({'; '.join(rule['reasons'])})"))
    return "\n".join(lines)


RUNNERS = {"list": _list, "show": _show, "register": _register, "promote": _promote}


def run(args: argparse.Namespace) -> int:
    return RUNNERS[args.action](args)
