"""Model versions: portable exports with their card, the registry folder, the promotion gate, the
champion-versus-challenger comparison and batch prediction (``docs/retraining.md``)."""
