"""Data: the MIMIC-IV stand-in generator (``ecgka.data.synth``) and the ECG-Ka-DIR build
(``ecgka.data.build``: labs, pairing, signal reading and QC, splits, shards, manifest)."""
