"""``python -m ecgka`` (also what ``torchrun -m ecgka train ...`` runs)."""

from ecgka.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
