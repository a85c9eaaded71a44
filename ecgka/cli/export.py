"""``ecgka export RUN_DIR --format torchscript|onnx --out DIR [--checkpoint best]``."""

from __future__ import annotations

from ecgka.cli.options import Command, ExportOptions


def run(o: ExportOptions) -> int:
    from ecgka.release.export import export_run
    from ecgka.release.registry import resolve_model

    run_dir, _ = resolve_model(o.run)
    path = export_run(run_dir, o.out, o.format, o.checkpoint, force=o.force)
    print(f"wrote {path} and its card")
    return 0


COMMAND = Command(ExportOptions, run)
